//! The commands of one device that are not rooms: each takes the home
//! lock, hands the command to the device core and carries out what it asks
//! of the server. The decisions are the core's.

use sotto_device::{ContactInfo, DeviceInfo, Message, PrekeyCount};
use sotto_proto::SafetyNumber;

use crate::net::local_ms;
use crate::{Client, Result};

impl Client {
    /// Sends a text message to `username` (all its devices, and this user's
    /// other devices). Returns the message as stored in the history.
    pub async fn send(&mut self, username: &str, text: &str) -> Result<Message> {
        self.send_with_ttl(username, text, 0).await
    }

    /// [`Client::send`] with a time to live in seconds (0 = forever).
    pub async fn send_with_ttl(&mut self, username: &str, text: &str, ttl: u32) -> Result<Message> {
        let (_guard, now) = self.begin_online().await?;
        let op = self.core.send_text(now, username, text, ttl)?;
        self.run(op).await
    }

    /// Stored messages, oldest first: all, or only those exchanged with
    /// `with`; the newest `limit` if given. Messages whose TTL ran out by
    /// the master clock (as last measured) are deleted first. Works
    /// offline.
    pub fn history(&mut self, with: Option<&str>, limit: Option<usize>) -> Result<Vec<Message>> {
        Ok(self.core.history(local_ms(), with, limit)?)
    }

    /// This user's devices, as the server lists them.
    pub async fn devices(&mut self) -> Result<Vec<DeviceInfo>> {
        let (_guard, now) = self.begin_online().await?;
        let op = self.core.devices(now);
        self.run(op).await
    }

    /// Removes a device of this user (lost or stolen; `device_id` as
    /// [`Client::devices`] lists it, in hex): the server drops it from the
    /// directory, refuses its requests and deletes its mailbox. Signed by
    /// the user key, so only the device holding it can do this.
    pub async fn remove_device(&mut self, device_id: &str) -> Result<()> {
        let (_guard, now) = self.begin_online().await?;
        let op = self.core.remove_device(now, device_id)?;
        self.run(op).await
    }

    /// The safety number of this user and `username`, to compare out of
    /// band. Looks the user up (trust on first use) if not yet a contact;
    /// fails with `KeyChanged` if the server now shows another key.
    pub async fn verify(&mut self, username: &str) -> Result<SafetyNumber> {
        let (_guard, now) = self.begin_online().await?;
        let op = self.core.verify(now, username)?;
        self.run(op).await
    }

    /// The safety number with the key the server shows for `username` now,
    /// without accepting it: what to compare after `KeyChanged`, before
    /// [`Client::trust`].
    pub async fn presented_safety_number(&mut self, username: &str) -> Result<SafetyNumber> {
        let (_guard, now) = self.begin_online().await?;
        let op = self.core.presented_safety_number(now, username)?;
        self.run(op).await
    }

    /// Records that the user compared safety numbers with `username` and
    /// they matched.
    pub fn mark_verified(&mut self, username: &str) -> Result<()> {
        Ok(self.core.mark_verified(username)?)
    }

    /// Accepts the key the server now shows for `username` (after
    /// `KeyChanged`): replaces the stored key, clears "verified", and
    /// returns the new safety number to compare.
    pub async fn trust(&mut self, username: &str) -> Result<SafetyNumber> {
        let (_guard, now) = self.begin_online().await?;
        let op = self.core.trust(now, username)?;
        self.run(op).await
    }

    /// Refuses messages from `username`: the server rejects their datagrams
    /// to this user, and this device drops any that still arrive.
    pub async fn block(&mut self, username: &str) -> Result<()> {
        let (_guard, now) = self.begin_online().await?;
        let op = self.core.block(now, username)?;
        self.run(op).await
    }

    /// Accepts messages from `username` again.
    pub async fn unblock(&mut self, username: &str) -> Result<()> {
        let (_guard, now) = self.begin_online().await?;
        let op = self.core.unblock(now, username)?;
        self.run(op).await
    }

    /// Users this device refuses messages from.
    pub fn blocked(&self) -> Result<Vec<String>> {
        Ok(self.core.blocked()?)
    }

    /// Known contacts.
    pub fn contacts(&self) -> Result<Vec<ContactInfo>> {
        Ok(self.core.contacts()?)
    }

    /// Refills the server's pool of this device's one-time prekeys if few
    /// are left (and replaces the reserve key if it was served). Returns
    /// how many were uploaded.
    pub async fn refill_prekeys_if_low(&mut self) -> Result<u32> {
        let (_guard, now) = self.begin_online().await?;
        let op = self.core.refill_prekeys_if_low(now);
        self.run(op).await
    }

    /// Uploads a batch of one-time prekeys and a new reserve key.
    pub async fn refill_prekeys(&mut self) -> Result<u32> {
        let (_guard, now) = self.begin_online().await?;
        let op = self.core.refill_prekeys(now);
        self.run(op).await
    }

    /// The server's count of this device's unclaimed one-time prekeys.
    pub async fn prekey_status(&mut self) -> Result<PrekeyCount> {
        let (_guard, now) = self.begin_online().await?;
        let op = self.core.prekey_status(now);
        self.run(op).await
    }
}
