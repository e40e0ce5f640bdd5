//! Linking a new device to an existing user: [`Client::link_start`] on the
//! new device, [`Client::approve`] on the device holding the user key,
//! [`LinkPending::wait`] back on the new device.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use rand_core::OsRng;
use reqwest::{Method, StatusCode};
use sha2::{Digest, Sha256};
use sotto_api::{b64, hex32, LinkApprove, LinkCreated, LinkRequest, LinkStatus};
use sotto_proto::{
    content, Device, DeviceId, DeviceKey, DevicePublicKeys, Payload, PrekeyKind, PrekeySecret,
    UserPublic,
};
use sotto_store::client::{Account, ClientStore};

use crate::net::{Api, ApiResult, Failure, NO_BODY};
use crate::setup::store_or_create;
use crate::{
    conversation_id, decode_cert, parse_fingerprint, random_id, Client, DeviceInfo, Error,
    LinkSyncBody, Result, SyncContact, PREKEY_BATCH,
};

/// The code shown on a new device: `<link_id>-<12 hex>`, the suffix being a
/// hash of the device's keys so the approving device can check it approves
/// this device and not one an attacker slipped in under the same link id.
fn link_code_suffix(device: &DeviceId, dh: &[u8; 32]) -> String {
    let mut h = Sha256::new();
    h.update(b"sotto/v1/link-code\0");
    h.update(device.0);
    h.update(dh);
    hex::encode(&h.finalize()[..6])
}

/// Link ids go into URL paths: short, URL-safe.
fn valid_link_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

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
        let key = DeviceKey::generate(&mut OsRng);
        let mut secrets = Vec::new();
        let mut prekeys = Vec::new();
        let mut next_id = 1u32;
        for _ in 0..PREKEY_BATCH {
            let (p, s) = key.generate_prekey(&mut OsRng, next_id, PrekeyKind::OneTime);
            prekeys.push(b64::encode(&p.encode()));
            secrets.push(s);
            next_id += 1;
        }
        let (reserve, s) = key.generate_prekey(&mut OsRng, next_id, PrekeyKind::Reserve);
        secrets.push(s);
        next_id += 1;
        let public = key.public_keys();
        let req = LinkRequest {
            device: hex::encode(public.id.0),
            dh: hex::encode(public.dh),
            prekeys,
            reserve: b64::encode(&reserve.encode()),
        };
        let created: LinkCreated = api
            .call(Method::POST, "/v1/link", Some(&req), Some(&key))
            .await?;
        if !valid_link_id(&created.link_id) {
            return Err(Error::BadResponse("bad link id".into()));
        }
        let code = format!(
            "{}-{}",
            created.link_id,
            link_code_suffix(&public.id, &public.dh)
        );
        Ok(LinkPending {
            store,
            api,
            key,
            prekeys: secrets,
            next_prekey_id: next_id,
            link_id: created.link_id,
            code,
        })
    }

    /// Approves a new device of this user from its link `code` (as printed
    /// by `sotto link`). Needs the user key (the registering device). Checks
    /// the code names the waiting device's keys, certifies them, and sends
    /// the new device this user's name, contacts and block list.
    pub async fn approve(&mut self, code: &str) -> Result<DeviceInfo> {
        let _guard = self.begin().await?;
        let user_key = self.user_key.as_ref().ok_or(Error::NoUserKey)?;
        let code = code.trim();
        let (link_id, suffix) = code
            .rsplit_once('-')
            .ok_or_else(|| Error::BadLinkCode(code.to_string()))?;
        if !valid_link_id(link_id)
            || suffix.len() != 12
            || !suffix.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(Error::BadLinkCode(code.to_string()));
        }
        let path = format!("/v1/link/{link_id}");
        let req: LinkRequest = link_call(
            self.api
                .call(Method::GET, &path, NO_BODY, Some(self.device.key()))
                .await,
        )?;
        let id =
            DeviceId(hex32(&req.device).ok_or_else(|| Error::BadResponse("device id".into()))?);
        let dh = hex32(&req.dh).ok_or_else(|| Error::BadResponse("device dh".into()))?;
        if link_code_suffix(&id, &dh) != suffix.to_lowercase() {
            return Err(Error::LinkCodeMismatch);
        }
        let now = self.api.now().await?;
        let cert = user_key.certify(&DevicePublicKeys { id, dh }, now);
        let approve = LinkApprove {
            cert: b64::encode(&cert.encode()),
        };
        let _: serde_json::Value = link_call(
            self.api
                .call(
                    Method::POST,
                    &format!("/v1/link/{link_id}/approve"),
                    Some(&approve),
                    Some(self.device.key()),
                )
                .await,
        )?;
        // Hand the new device what it needs: who it is, contacts, blocks.
        let contacts = self
            .store
            .contacts()?
            .into_iter()
            .map(|c| SyncContact {
                username: c.username,
                user_key: UserPublic(c.user_key),
                verified: c.verified,
            })
            .collect();
        let sync = LinkSyncBody {
            username: self.username.clone(),
            contacts,
            blocked: self.store.blocked()?,
        };
        let own = self.device.cert().user;
        self.ensure_sessions(&self.username.clone(), &own, &[cert])
            .await?;
        let payload = Payload {
            message_id: random_id(),
            conversation: conversation_id(&own, &own),
            sender: own,
            sent_at: now,
            ttl: 0,
            content_type: content::LINK_SYNC,
            body: sync.encode(),
        };
        self.seal_and_post(&payload, &[id], None).await?;
        Ok(DeviceInfo {
            id: hex::encode(id.0),
            created_at: now,
            this_device: false,
        })
    }
}

/// The result of a call on a link request: the server forgets a request
/// (404) when it expired.
fn link_call<T>(r: ApiResult<T>) -> Result<T> {
    match r {
        Ok(v) => Ok(v),
        Err(Failure::Api(e)) if e.status == StatusCode::NOT_FOUND => Err(Error::LinkExpired),
        Err(e) => Err(e.into()),
    }
}

/// A new device waiting for approval (see [`Client::link_start`]).
pub struct LinkPending {
    store: ClientStore,
    api: Api,
    key: DeviceKey,
    prekeys: Vec<PrekeySecret>,
    next_prekey_id: u32,
    link_id: String,
    code: String,
}

impl LinkPending {
    /// The code to show the user; they type it into `sotto approve` on an
    /// existing device. It names the request and a hash of this device's
    /// keys.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The pinned server certificate fingerprint (to show the user).
    pub fn fingerprint(&self) -> Option<String> {
        self.api.fingerprint()
    }

    /// Waits (polling every second, up to `timeout`) until an existing
    /// device approved the request, stores the certificate, then syncs
    /// until the approving device's link data (username, contacts) arrived
    /// (up to 30 s more; [`Error::LinkIncomplete`] if it did not).
    pub async fn wait(self, timeout: Duration) -> Result<Client> {
        let LinkPending {
            mut store,
            api,
            key,
            prekeys,
            next_prekey_id,
            link_id,
            ..
        } = self;
        let deadline = tokio::time::Instant::now() + timeout;
        let path = format!("/v1/link/{link_id}/status");
        let status = loop {
            let st: LinkStatus = link_call(api.call(Method::GET, &path, NO_BODY, None).await)?;
            if st.approved {
                break st;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::LinkExpired);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let cert = status
            .cert
            .as_deref()
            .and_then(decode_cert)
            .ok_or_else(|| Error::BadResponse("approved link without a certificate".into()))?;
        let public = key.public_keys();
        if cert.device != public.id || cert.dh != public.dh {
            return Err(Error::LinkCodeMismatch);
        }
        cert.verify()?;
        let mut device = Device::restore(key, cert, prekeys, Vec::new(), next_prekey_id)?;
        // All prekeys are new to the store: report them as added.
        let ids: HashSet<u32> = (1..next_prekey_id).collect();
        let fp = api
            .fingerprint()
            .ok_or_else(|| Error::BadResponse("no certificate seen".into()))?;
        store.put_account(&Account {
            username: String::new(),
            user_key: None,
            device_key: device.key().to_bytes(),
            device_cert: cert.encode(),
            server_url: api.base.clone(),
            server_fingerprint: fp,
            cursor: 0,
            next_prekey_id,
        })?;
        {
            let changes = sotto_proto::Changes {
                prekeys_added: ids.into_iter().collect(),
                ..sotto_proto::Changes::default()
            };
            let _ = device.take_changes();
            let tx = store.transaction()?;
            tx.apply_device_changes(&device, &changes)?;
            tx.commit()?;
        }
        let mut client = Client::assemble(store, device, None, String::new(), api);
        let sync_deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            client.sync().await?;
            if !client.username.is_empty() {
                return Ok(client);
            }
            if tokio::time::Instant::now() >= sync_deadline {
                return Err(Error::LinkIncomplete);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}
