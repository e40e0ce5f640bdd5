//! Test hooks for rooms (hidden from the docs): forging an entry the way a
//! misbehaving member's client would, losing deliveries, and looking at
//! datagrams on the server. Nothing here is used by the CLI.

use reqwest::Method;
use sotto_api::username_hash;
use sotto_proto::content;
use sotto_proto::room::{Body, Draft, Op, RoomWire};

use crate::rooms::member_names;
use crate::{random_id, Client, Result};

impl Client {
    /// Signs a control entry with this device's key as the proto API allows
    /// any member to, skipping the local checks (`RoomLog::propose` would
    /// refuse a non-admin's change), and sends it to every member device,
    /// without applying it here.
    #[doc(hidden)]
    pub async fn room_forge(&mut self, room: &str, op: Op) -> Result<()> {
        let _guard = self.begin().await?;
        let group = self.find_room(room)?;
        let log = self.load_room(&group)?.expect("room");
        let draft = Draft {
            group,
            message_id: random_id(),
            parents: log.parents_for_next(),
            sender_name: username_hash(self.require_username()?),
            timestamp: self.room_now().await?,
            body: Body::Control(op),
        };
        let message_id = draft.message_id;
        let entry = draft.sign(self.device.key(), self.device.cert())?;
        let body = RoomWire::Entry {
            entry: entry.encode(),
            content: None,
        }
        .encode()?;
        let names = member_names(&log);
        self.post_to_users(
            &group,
            &names,
            &log.recipients(),
            None,
            message_id,
            content::ROOM_CONTROL,
            body,
            0,
        )
        .await?;
        Ok(())
    }

    /// Room datagrams from this device skip `usernames` until cleared
    /// (simulates lost deliveries).
    #[doc(hidden)]
    pub fn drop_room_deliveries_to(&mut self, usernames: &[&str]) {
        self.rooms.drop_to = usernames.iter().map(|u| username_hash(u)).collect();
    }

    /// The datagram ids (hex) recorded beside a room's entries, in log order.
    #[doc(hidden)]
    pub fn room_datagram_ids(&self, room: &str) -> Result<Vec<String>> {
        let group = self.find_room(room)?;
        Ok(self
            .store
            .room_records(&group.0)?
            .iter()
            .filter_map(|r| r.datagram_id.map(hex::encode))
            .collect())
    }

    /// Fetches a retained datagram by hex id (`GET /v1/datagrams/{id}`).
    #[doc(hidden)]
    pub async fn fetch_datagram(&self, id: &str) -> Result<Vec<u8>> {
        let path = format!("/v1/datagrams/{id}");
        Ok(self
            .api
            .send(Method::GET, &path, None, Some(self.device.key()))
            .await?)
    }

    /// Whether this device can open a datagram (nothing is kept).
    #[doc(hidden)]
    pub async fn can_open(&mut self, datagram: &[u8]) -> Result<bool> {
        let _guard = self.begin().await?;
        let opened = self.device.open(datagram).is_ok();
        self.reload_device()?;
        Ok(opened)
    }
}
