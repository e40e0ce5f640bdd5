//! The device core's store trait over the SQLCipher store: reads delegate
//! to the methods of the same name, [`sotto_device::Store::commit`] writes
//! a change set in one transaction.

use sotto_device::{Store, StoreError as DeviceStoreError, StoreResult};
use zeroize::Zeroizing;

use super::{
    Account, ChangeSet, ClientStore, Contact, HistoryQuery, Message, RoomMessageRow, RoomRecord,
    StoreError,
};

impl From<StoreError> for DeviceStoreError {
    fn from(e: StoreError) -> DeviceStoreError {
        match e {
            StoreError::Corrupt(what) => DeviceStoreError::Corrupt(what),
            other => DeviceStoreError::Backend(Box::new(other)),
        }
    }
}

impl Store for ClientStore {
    fn account(&self) -> StoreResult<Option<Account>> {
        Ok(ClientStore::account(self)?)
    }

    fn prekeys(&self) -> StoreResult<Vec<Zeroizing<Vec<u8>>>> {
        Ok(ClientStore::prekeys(self)?)
    }

    fn sessions(&self) -> StoreResult<Vec<Zeroizing<Vec<u8>>>> {
        Ok(ClientStore::sessions(self)?)
    }

    fn contact(&self, username: &str) -> StoreResult<Option<Contact>> {
        Ok(ClientStore::contact(self, username)?)
    }

    fn contacts(&self) -> StoreResult<Vec<Contact>> {
        Ok(ClientStore::contacts(self)?)
    }

    fn is_blocked(&self, username: &str) -> StoreResult<bool> {
        Ok(ClientStore::is_blocked(self, username)?)
    }

    fn blocked(&self) -> StoreResult<Vec<String>> {
        Ok(ClientStore::blocked(self)?)
    }

    fn has_message(&self, id: &[u8; 16]) -> StoreResult<bool> {
        Ok(ClientStore::has_message(self, id)?)
    }

    fn history(&self, q: &HistoryQuery) -> StoreResult<Vec<Message>> {
        Ok(ClientStore::history(self, q)?)
    }

    fn rooms(&self) -> StoreResult<Vec<([u8; 32], String)>> {
        Ok(ClientStore::rooms(self)?)
    }

    fn rooms_due(&self, now_ms: u64) -> StoreResult<Vec<[u8; 32]>> {
        Ok(ClientStore::rooms_due(self, now_ms)?)
    }

    fn room_head(&self, group: &[u8; 32]) -> StoreResult<Option<[u8; 32]>> {
        Ok(ClientStore::room_head(self, group)?)
    }

    fn room_records(&self, group: &[u8; 32]) -> StoreResult<Vec<RoomRecord>> {
        Ok(ClientStore::room_records(self, group)?)
    }

    fn room_message(&self, entry: &[u8; 32]) -> StoreResult<Option<RoomMessageRow>> {
        Ok(ClientStore::room_message_by_entry(self, entry)?)
    }

    fn room_messages(&self, group: &[u8; 32]) -> StoreResult<Vec<RoomMessageRow>> {
        Ok(ClientStore::room_messages(self, group)?)
    }

    fn name_for_hash(&self, hash: &[u8; 32]) -> StoreResult<Option<String>> {
        Ok(ClientStore::name_for_hash(self, hash)?)
    }

    fn commit(&mut self, changes: ChangeSet) -> StoreResult<()> {
        Ok(ClientStore::commit(self, changes)?)
    }
}
