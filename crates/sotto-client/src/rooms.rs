//! Room commands: each takes the home lock, hands the command to the
//! device core (which holds all room logic, `sotto_device::rooms`) and
//! carries out the sends it asks for. Views need no server.

use sotto_device::{RoomChanges, RoomEvent, RoomLine, RoomLogReport, RoomSummary, RoomView};
use sotto_proto::room::Ttl;

use crate::net::local_ms;
use crate::{Client, Result};

impl Client {
    /// Creates a room with this user as admin, `members` (usernames) as
    /// members and `admins` (usernames, made members too) as further
    /// admins, and sends the create entry to every member device.
    pub async fn room_create(
        &mut self,
        title: &str,
        description: &str,
        ttl: Ttl,
        members: &[String],
        admins: &[String],
    ) -> Result<RoomSummary> {
        let (_guard, now) = self.begin_online().await?;
        let op = self
            .core
            .room_create(now, title, description, ttl, members, admins)?;
        self.run(op).await
    }

    /// Sends a text message to the room: one datagram to every device of
    /// every current member (and this user's other devices).
    pub async fn room_send(&mut self, room: &str, text: &str) -> Result<RoomLine> {
        let (_guard, now) = self.begin_online().await?;
        let op = self.core.room_send(now, room, text)?;
        self.run(op).await
    }

    /// Applies `changes` (admins only, all or nothing) and sends each
    /// entry. Returns what the changes did.
    pub async fn room_set(&mut self, room: &str, changes: &RoomChanges) -> Result<Vec<RoomEvent>> {
        let (_guard, now) = self.begin_online().await?;
        let op = self.core.room_set(now, room, changes)?;
        self.run(op).await
    }

    /// Leaves the room (the other members see it; nothing sent after
    /// reaches this user).
    pub async fn room_leave(&mut self, room: &str) -> Result<Vec<RoomEvent>> {
        let (_guard, now) = self.begin_online().await?;
        let op = self.core.room_leave(now, room)?;
        self.run(op).await
    }

    /// Asks `from` (a member's username; this user's other devices when
    /// `None`) for the history of the room `room` (title or hex id) that
    /// this user is entitled to. The answer arrives with the next syncs.
    pub async fn room_recover(&mut self, room: &str, from: Option<&str>) -> Result<()> {
        let (_guard, now) = self.begin_online().await?;
        let op = self.core.room_recover(now, room, from)?;
        self.run(op).await
    }

    /// The rooms on this device (known state only), by title.
    pub fn rooms(&mut self) -> Result<Vec<RoomSummary>> {
        Ok(self.core.rooms()?)
    }

    /// Title, description, TTL, members (admins first) and the timeline;
    /// messages whose TTL passed are deleted first.
    pub fn room_show(&mut self, room: &str) -> Result<RoomView> {
        Ok(self.core.room_show(local_ms(), room)?)
    }

    /// Messages of the room's local history containing `query` (ignoring
    /// case).
    pub fn room_search(&mut self, room: &str, query: &str) -> Result<Vec<RoomLine>> {
        Ok(self.core.room_search(local_ms(), room, query)?)
    }

    /// Every entry of the room's log in resolved order; with `verify`, the
    /// stored chain recomputed and the first bad link reported.
    pub fn room_log(&mut self, room: &str, verify: bool) -> Result<RoomLogReport> {
        Ok(self.core.room_log(room, verify)?)
    }
}
