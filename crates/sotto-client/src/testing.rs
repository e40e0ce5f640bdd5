//! Test hooks (feature `testing`): the device core's hooks, store
//! tampering, and raw server calls a misbehaving client would make.

use reqwest::Method;
use sotto_api::{paths, username_hash, ClaimRequest, ClaimResponse};
use sotto_proto::room::{EntryHash, Op as RoomOp};

use crate::{Client, Result};

impl Client {
    /// Simulate a device that dies after committing received messages but
    /// before acknowledging them.
    pub fn set_skip_ack(&mut self, skip: bool) {
        self.core.set_skip_ack(skip);
    }

    /// Sends an arbitrary client body of `content_type` to `username`'s
    /// devices and this user's other devices (to check that receivers
    /// refuse forged bodies).
    pub async fn send_raw_body(
        &mut self,
        username: &str,
        content_type: u8,
        body: Vec<u8>,
    ) -> Result<()> {
        let (_guard, now) = self.begin_online().await?;
        let op = self.core.send_raw_body(now, username, content_type, body)?;
        self.run(op).await
    }

    /// Claims one prekey bundle for every device of `username` without
    /// using it (as a sender that never writes would). Returns how many
    /// bundles were served.
    pub async fn claim_bundles(&self, username: &str) -> Result<usize> {
        let resp: ClaimResponse = self
            .api()?
            .call(
                Method::POST,
                &paths::bundles(&username_hash(username)),
                Some(&ClaimRequest::default()),
                Some(self.core.device().key()),
            )
            .await?;
        Ok(resp.bundles.len())
    }

    /// Approves the device waiting under `link_id` without its code, as an
    /// attacker holding this account's user key but not the code would:
    /// certifies it and hands over an approval sealed under a made-up
    /// secret. The server accepts it (it cannot tell); the new device must
    /// not.
    pub async fn approve_without_code(&mut self, link_id: &str) -> Result<()> {
        let (_guard, now) = self.begin_online().await?;
        let op = self.core.approve_without_code(now, link_id)?;
        self.run(op).await.map(|_| ())
    }

    /// Moves this client's room clock forward by `ms` (past a room TTL).
    pub fn shift_room_clock(&mut self, ms: i64) {
        self.core.shift_room_clock(ms);
    }

    /// Room datagrams from this device skip `usernames` until cleared
    /// (lost deliveries).
    pub fn drop_room_deliveries_to(&mut self, usernames: &[&str]) {
        self.core.drop_room_deliveries_to(usernames);
    }

    /// Overwrites the stored bytes of log record `pos` of a room.
    pub fn tamper_room_record(&self, room: &str, pos: usize, bytes: &[u8]) -> Result<bool> {
        let group = self.core.room_id(room)?;
        Ok(self.store.tamper_room_record(&group.0, pos, bytes)?)
    }

    /// The stored log records of a room (hash, encoded entry).
    pub fn room_records(&self, room: &str) -> Result<Vec<(EntryHash, Vec<u8>)>> {
        Ok(self.core.room_records(room)?)
    }

    /// The bodies of the room messages held in the store.
    pub fn room_stored_bodies(&self, room: &str) -> Result<Vec<String>> {
        Ok(self.core.room_stored_bodies(room)?)
    }

    /// The datagram ids (hex) recorded beside a room's entries, in log order.
    pub fn room_datagram_ids(&self, room: &str) -> Result<Vec<String>> {
        Ok(self
            .core
            .room_datagram_ids(room)?
            .iter()
            .map(hex::encode)
            .collect())
    }

    /// Signs a control entry as any member's client can and sends it to
    /// every member device, skipping the local checks.
    pub async fn room_forge(&mut self, room: &str, op: RoomOp) -> Result<()> {
        let (_guard, now) = self.begin_online().await?;
        let op = self.core.room_forge(now, room, op)?;
        self.run(op).await
    }

    /// Fetches a retained datagram by hex id (`GET /v1/datagrams/{id}`).
    pub async fn fetch_datagram(&self, id: &str) -> Result<Vec<u8>> {
        let id = sotto_api::hex32(id)
            .ok_or_else(|| crate::Error::BadResponse("datagram id is not hex".into()))?;
        Ok(self
            .api()?
            .send(
                Method::GET,
                &paths::datagram(&id),
                None,
                Some(self.core.device().key()),
            )
            .await?)
    }

    /// Whether this device can open a datagram (nothing is kept).
    pub async fn can_open(&mut self, datagram: &[u8]) -> Result<bool> {
        let _guard = self.begin().await?;
        Ok(self.core.can_open(datagram)?)
    }
}
