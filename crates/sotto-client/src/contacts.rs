//! The directory and what this device knows of other users: looking users
//! and devices up on the server, contacts (trust on first use, safety
//! numbers, accepting a changed key), blocks, and the message history.

use reqwest::{Method, StatusCode};
use sotto_api::{b64, codes, hex32, username_hash, Block, RemoveDevice, UserDevices};
use sotto_proto::{check_contact_key, safety_number, ContactKey, DeviceCert, DeviceId, UserPublic};
use sotto_store::client::{normalize, Contact, HistoryQuery};

use crate::net::{Failure, NO_BODY};
use crate::{
    decode_cert, parse_user, peer_name, Client, ContactInfo, DeviceInfo, Error, Message, Result,
    SafetyNumber,
};

/// The certificates among `encoded` (base64) that decode and were made by
/// `user`'s key.
fn verified_certs<'a>(
    encoded: &'a [String],
    user: &'a UserPublic,
) -> impl Iterator<Item = DeviceCert> + 'a {
    encoded
        .iter()
        .filter_map(|d| decode_cert(d))
        .filter(move |c| c.verify_for(user).is_ok())
}

/// The stored record of contact `username` with key `user` and devices
/// `certs`.
pub(crate) fn contact_record(
    username: &str,
    user: &UserPublic,
    verified: bool,
    certs: &[DeviceCert],
) -> Contact {
    Contact {
        username: username.to_string(),
        username_hash: username_hash(username),
        user_key: user.0,
        verified,
        devices: certs.iter().map(|c| c.encode()).collect(),
    }
}

impl Client {
    /// This user's devices, as the server lists them.
    pub async fn devices(&self) -> Result<Vec<DeviceInfo>> {
        let me = self.device.id();
        Ok(self
            .own_certs()
            .await?
            .into_iter()
            .map(|c| DeviceInfo {
                id: hex::encode(c.device.0),
                created_at: c.created_at,
                this_device: c.device == me,
            })
            .collect())
    }

    /// Removes a device of this user (lost or stolen; `device_id` as
    /// [`Client::devices`] lists it): the server drops it from the
    /// directory, refuses its requests and deletes its mailbox. Signed by
    /// the user key, so only the device holding it can do this
    /// ([`Error::NoUserKey`]).
    pub async fn remove_device(&self, device_id: &str) -> Result<()> {
        let user_key = self.user_key.as_ref().ok_or(Error::NoUserKey)?;
        let unknown = || Error::UnknownDevice(device_id.to_string());
        let device = DeviceId(hex32(device_id.trim()).ok_or_else(unknown)?);
        let time_ms = self.api.now().await?;
        let body = RemoveDevice {
            time_ms,
            signature: b64::encode(&user_key.sign_removal(&device, time_ms)),
        };
        let path = format!("/v1/devices/{}", hex::encode(device.0));
        let removed: std::result::Result<serde_json::Value, _> = self
            .api
            .call(Method::DELETE, &path, Some(&body), Some(self.device.key()))
            .await;
        match removed {
            Ok(_) => Ok(()),
            Err(Failure::Api(e)) if e.code == codes::UNKNOWN_DEVICE => Err(unknown()),
            Err(e) => Err(e.into()),
        }
    }

    /// This user's devices other than this one, verified.
    pub(crate) async fn own_devices(&self) -> Result<Vec<DeviceCert>> {
        let me = self.device.id();
        let mut certs = self.own_certs().await?;
        certs.retain(|c| c.device != me);
        Ok(certs)
    }

    /// This user's device certificates as the server lists them, verified
    /// against this user's key.
    async fn own_certs(&self) -> Result<Vec<DeviceCert>> {
        let ud: UserDevices = self
            .api
            .call(Method::GET, "/v1/devices", NO_BODY, Some(self.device.key()))
            .await?;
        Ok(verified_certs(&ud.devices, &self.device.cert().user).collect())
    }

    /// Fetches a user's key and device certificates (verified against the
    /// key) from the server. `UnknownUser` if there is no such user.
    pub(crate) async fn fetch_user(&self, username: &str) -> Result<(UserPublic, Vec<DeviceCert>)> {
        self.fetch_by_hash(&username_hash(username))
            .await?
            .ok_or_else(|| Error::UnknownUser(username.to_string()))
    }

    /// A user's key and verified device certificates, by username hash.
    pub(crate) async fn fetch_by_hash(
        &self,
        hash: &[u8; 32],
    ) -> Result<Option<(UserPublic, Vec<DeviceCert>)>> {
        let path = format!("/v1/users/{}", hex::encode(hash));
        let ud: UserDevices = match self
            .api
            .call(Method::GET, &path, NO_BODY, Some(self.device.key()))
            .await
        {
            Ok(u) => u,
            Err(Failure::Api(e)) if e.status == StatusCode::NOT_FOUND => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let user = parse_user(&ud.user)?;
        let certs = verified_certs(&ud.devices, &user).collect();
        Ok(Some((user, certs)))
    }

    /// Resolves a contact: fetches the user's current key and devices and
    /// checks the key against the stored one (TOFU on first contact).
    pub(crate) async fn resolve(
        &mut self,
        username: &str,
    ) -> Result<(UserPublic, Vec<DeviceCert>)> {
        let (user, certs) = self.fetch_user(username).await?;
        if !self.username.is_empty() && username == self.username {
            // Oneself: the key is the one that certified this device.
            if user != self.device.cert().user {
                return Err(Error::KeyChanged {
                    username: username.to_string(),
                });
            }
            return Ok((user, certs));
        }
        let known = self.store.contact(username)?;
        match check_contact_key(
            known.as_ref().map(|c| UserPublic(c.user_key)).as_ref(),
            &user,
        ) {
            ContactKey::Changed { .. } => {
                return Err(Error::KeyChanged {
                    username: username.to_string(),
                })
            }
            ContactKey::FirstSeen | ContactKey::Unchanged => {}
        }
        let verified = known.map(|c| c.verified).unwrap_or(false);
        self.store
            .put_contact(&contact_record(username, &user, verified, &certs))?;
        Ok((user, certs))
    }

    /// Stored messages, oldest first: all, or only those exchanged with
    /// `with`; the newest `limit` if given. Expired messages (TTL) are
    /// deleted first. Works offline.
    pub fn history(&self, with: Option<&str>, limit: Option<usize>) -> Result<Vec<Message>> {
        self.store.purge_expired(self.api.now_offline())?;
        let q = HistoryQuery {
            conversation: None,
            peer: with.map(normalize),
            limit,
        };
        Ok(self
            .store
            .history(&q)?
            .into_iter()
            .map(Message::from)
            .collect())
    }

    /// Known contacts.
    pub fn contacts(&self) -> Result<Vec<ContactInfo>> {
        Ok(self
            .store
            .contacts()?
            .into_iter()
            .map(|c| ContactInfo {
                username: c.username,
                user_key: hex::encode(c.user_key),
                verified: c.verified,
                devices: c.devices.len(),
            })
            .collect())
    }

    /// The safety number of this user and `username`, to compare out of
    /// band. Looks the user up (TOFU) if not yet a contact; fails with
    /// [`Error::KeyChanged`] if the server now shows another key.
    pub async fn verify(&mut self, username: &str) -> Result<SafetyNumber> {
        let name = peer_name(username)?;
        let (user, _) = self.resolve(&name).await?;
        Ok(safety_number(&self.device.cert().user, &user))
    }

    /// The safety number with the key the server shows for `username` now,
    /// without accepting it: what to compare after [`Error::KeyChanged`],
    /// before [`Client::trust`].
    pub async fn presented_safety_number(&self, username: &str) -> Result<SafetyNumber> {
        let name = peer_name(username)?;
        let (user, _) = self.fetch_user(&name).await?;
        Ok(safety_number(&self.device.cert().user, &user))
    }

    /// Records that the user compared safety numbers with `username` and
    /// they matched.
    pub fn mark_verified(&mut self, username: &str) -> Result<()> {
        let mut c = self
            .store
            .contact(username)?
            .ok_or_else(|| Error::UnknownUser(username.to_string()))?;
        c.verified = true;
        self.store.put_contact(&c)?;
        Ok(())
    }

    /// Accepts the key the server now shows for `username` (after
    /// [`Error::KeyChanged`]): replaces the stored key, clears "verified",
    /// and returns the new safety number to compare.
    pub async fn trust(&mut self, username: &str) -> Result<SafetyNumber> {
        let _guard = self.begin().await?;
        let name = peer_name(username)?;
        let (user, certs) = self.fetch_user(&name).await?;
        // Sessions with the devices of the old key are of no use any more.
        if let Some(old) = self.store.contact(&name)? {
            if old.user_key != user.0 {
                for d in old
                    .devices
                    .iter()
                    .filter_map(|d| DeviceCert::decode(d).ok())
                {
                    self.device.forget_peer(&d.device);
                }
                self.store.save_device(&mut self.device)?;
            }
        }
        self.store
            .put_contact(&contact_record(&name, &user, false, &certs))?;
        Ok(safety_number(&self.device.cert().user, &user))
    }

    /// Refuses messages from `username`: the server rejects their datagrams
    /// to this user, and this device drops any that still arrive.
    pub async fn block(&mut self, username: &str) -> Result<()> {
        let name = peer_name(username)?;
        let req = Block {
            username_hash: hex::encode(username_hash(&name)),
        };
        let _: serde_json::Value = self
            .api
            .call(
                Method::POST,
                "/v1/blocks",
                Some(&req),
                Some(self.device.key()),
            )
            .await?;
        self.store.block(&name)?;
        Ok(())
    }

    /// Accepts messages from `username` again.
    pub async fn unblock(&mut self, username: &str) -> Result<()> {
        let name = peer_name(username)?;
        let path = format!("/v1/blocks/{}", hex::encode(username_hash(&name)));
        let _: serde_json::Value = self
            .api
            .call(Method::DELETE, &path, NO_BODY, Some(self.device.key()))
            .await?;
        self.store.unblock(&name)?;
        Ok(())
    }

    /// Users this device refuses messages from.
    pub fn blocked(&self) -> Result<Vec<String>> {
        Ok(self.store.blocked()?)
    }
}
