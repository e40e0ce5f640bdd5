//! Sending: resolving the recipient's and this user's devices, starting
//! sessions (one claimed prekey bundle per new device), sealing once to
//! all, and posting.

use rand_core::OsRng;
use reqwest::{Method, StatusCode};
use sotto_api::{b64, codes, username_hash, Bundle, ClaimRequest, ClaimResponse, SendResponse};
use sotto_proto::{content, DeviceCert, DeviceId, Payload, PrekeyBundle, SignedPrekey, UserPublic};
use sotto_store::client::StoredMessage;

use crate::net::Failure;
use crate::{
    conversation_id, decode_cert, peer_name, random_id, Client, Error, Message, Result, TextBody,
};

impl Client {
    /// Sends a text message to `username` (all its devices, and this user's
    /// other devices). Returns the message as stored in the history.
    pub async fn send(&mut self, username: &str, text: &str) -> Result<Message> {
        self.send_with_ttl(username, text, 0).await
    }

    /// [`Client::send`] with a time to live in seconds (0 = forever).
    pub async fn send_with_ttl(&mut self, username: &str, text: &str, ttl: u32) -> Result<Message> {
        let to = peer_name(username)?;
        let me = self.require_username()?.to_string();
        if self.store.is_blocked(&to)? {
            return Err(Error::YouBlocked(to));
        }
        let body = TextBody {
            sender: me.clone(),
            recipient: to.clone(),
            text: text.to_string(),
        }
        .encode();
        let stored = self
            .deliver(&to, &me, content::TEXT, body, ttl, Some(text))
            .await?;
        Ok(stored.expect("text is stored").into())
    }

    /// Test hook: sends an arbitrary client body of `content_type` to
    /// `username`'s devices and this user's other devices, as [`Client::send`]
    /// would (used to check that receivers refuse forged bodies).
    #[doc(hidden)]
    pub async fn send_raw_body(
        &mut self,
        username: &str,
        content_type: u8,
        body: Vec<u8>,
    ) -> Result<()> {
        let to = peer_name(username)?;
        let me = self.require_username()?.to_string();
        self.deliver(&to, &me, content_type, body, 0, None).await?;
        Ok(())
    }

    /// Test hook: claims one prekey bundle for every device of `username`
    /// without using it (as a sender that never writes would). Returns how
    /// many bundles were served.
    #[doc(hidden)]
    pub async fn claim_bundles(&self, username: &str) -> Result<usize> {
        let path = format!("/v1/users/{}/bundles", hex::encode(username_hash(username)));
        let resp: ClaimResponse = self
            .api
            .call(
                Method::POST,
                &path,
                Some(&ClaimRequest::default()),
                Some(self.device.key()),
            )
            .await?;
        Ok(resp.bundles.len())
    }

    /// Resolves `to` and this user's devices, starts missing sessions,
    /// seals once to all, stores `text` (if any) in the history, posts.
    async fn deliver(
        &mut self,
        to: &str,
        me: &str,
        content_type: u8,
        body: Vec<u8>,
        ttl: u32,
        text: Option<&str>,
    ) -> Result<Option<StoredMessage>> {
        let _guard = self.begin().await?;
        if body.len() > sotto_proto::datagram::MAX_BODY {
            return Err(Error::TooLarge);
        }
        let own_user = self.device.cert().user;
        // Resolve both users' current devices (every send: new devices get it).
        let (their_user, their_certs) = self.resolve(to).await?;
        let own_certs = if to == me {
            Vec::new()
        } else {
            self.own_devices().await?
        };
        self.ensure_sessions(to, &their_user, &their_certs).await?;
        self.ensure_sessions(me, &own_user, &own_certs).await?;
        let me_id = self.device.id();
        let mut recipients: Vec<DeviceId> = Vec::new();
        for c in their_certs.iter().chain(own_certs.iter()) {
            if c.device != me_id
                && self.device.has_session(&c.device)
                && !recipients.contains(&c.device)
            {
                recipients.push(c.device);
            }
        }
        if recipients.is_empty() {
            return Err(Error::NoDevices(to.to_string()));
        }
        let now = self.api.now().await?;
        let payload = Payload {
            message_id: random_id(),
            conversation: conversation_id(&own_user, &their_user),
            sender: own_user,
            sent_at: now,
            ttl,
            content_type,
            body,
        };
        let stored = text.map(|text| StoredMessage {
            id: payload.message_id,
            conversation: payload.conversation,
            from: me.to_string(),
            to: to.to_string(),
            sent_at: now,
            received_at: now,
            body: text.to_string(),
            ttl,
            outgoing: true,
        });
        match self
            .seal_and_post(&payload, &recipients, stored.as_ref())
            .await
        {
            Ok(_) => Ok(stored),
            Err(Error::Server {
                status: 403, code, ..
            }) if code == codes::BLOCKED => Err(Error::Blocked(to.to_string())),
            Err(e) => Err(e),
        }
    }

    /// Starts sessions with those of `certs` that have none, claiming one
    /// prekey bundle per such device.
    pub(crate) async fn ensure_sessions(
        &mut self,
        username: &str,
        user: &UserPublic,
        certs: &[DeviceCert],
    ) -> Result<()> {
        self.ensure_sessions_hash(&username_hash(username), username, user, certs)
            .await
    }

    /// [`Client::ensure_sessions`] by username hash (`who` names the user in
    /// errors).
    pub(crate) async fn ensure_sessions_hash(
        &mut self,
        name_hash: &[u8; 32],
        who: &str,
        user: &UserPublic,
        certs: &[DeviceCert],
    ) -> Result<()> {
        let missing: Vec<String> = certs
            .iter()
            .filter(|c| c.device != self.device.id() && !self.device.has_session(&c.device))
            .map(|c| hex::encode(c.device.0))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let path = format!("/v1/users/{}/bundles", hex::encode(name_hash));
        let req = ClaimRequest { devices: missing };
        let resp: ClaimResponse = match self
            .api
            .call(Method::POST, &path, Some(&req), Some(self.device.key()))
            .await
        {
            Ok(r) => r,
            Err(Failure::Api(e))
                if e.status == StatusCode::NOT_FOUND && e.code == codes::UNKNOWN_USER =>
            {
                return Err(Error::UnknownUser(who.to_string()))
            }
            Err(e) => return Err(e.into()),
        };
        for Bundle { cert, prekey } in &resp.bundles {
            let (Some(cert), Some(prekey)) = (
                decode_cert(cert),
                b64::decode(prekey).and_then(|p| SignedPrekey::decode(&p).ok()),
            ) else {
                continue;
            };
            // Verify user key -> device cert -> prekey before use.
            if let Ok(verified) = (PrekeyBundle { cert, prekey }).verify(user) {
                self.device.start_session(&mut OsRng, &verified)?;
            }
        }
        Ok(())
    }

    /// Seals once, persists the advanced sessions (and `history`, if any)
    /// in one transaction, then posts. On failure the history row is
    /// removed again (the sessions stay advanced: counters are never reused).
    pub(crate) async fn seal_and_post(
        &mut self,
        payload: &Payload,
        recipients: &[DeviceId],
        history: Option<&StoredMessage>,
    ) -> Result<SendResponse> {
        let datagram = self.device.seal(&mut OsRng, payload, recipients)?;
        let changes = self.device.take_changes();
        {
            let tx = self.store.transaction()?;
            tx.apply_device_changes(&self.device, &changes)?;
            if let Some(m) = history {
                tx.insert_message(m)?;
            }
            tx.commit()?;
        }
        let r = self
            .api
            .send(
                Method::POST,
                "/v1/messages",
                Some((datagram, "application/octet-stream")),
                Some(self.device.key()),
            )
            .await;
        match r {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| Error::BadResponse(format!("send: {e}")))
            }
            Err(e) => {
                if let Some(m) = history {
                    self.store.delete_message(&m.id)?;
                }
                Err(e.into())
            }
        }
    }
}
