//! Room log entries and their control ops on hostile input. The first byte
//! picks a mode, the second an offset:
//!
//! * mode 0: the rest decoded as an entry (and taken in by a replica of the
//!   fixture room, as from the network and as from the store);
//! * mode 1: the rest spliced into a genuine control entry at the offset;
//! * mode 2: as mode 1, then re-signed with the room admin's device key,
//!   so the state machine sees whatever op decodes (with its group fixed
//!   up to the room's).
//!
//! Invariants: a decoded entry encodes to the same bytes; whatever a
//! replica takes in, it still verifies, and a stored replica that is given
//! anything still has its room.

use sotto_proto::room::*;
use sotto_proto::*;

use super::room_fixture::{fixture, replica};

/// The target: see the module documentation.
pub fn run(data: &[u8]) {
    let [mode, at, rest @ ..] = data else {
        return;
    };
    let f = fixture();
    let bytes = match mode % 3 {
        0 => rest.to_vec(),
        m => {
            // A control entry: the last record (alice renames the room).
            let mut b = f.records.last().expect("records").bytes.clone();
            let at = (*at as usize * 4).min(b.len());
            let end = (at + rest.len()).min(b.len());
            b.splice(at..end, rest.iter().copied());
            if m == 2 {
                match resign(f, &b) {
                    Some(s) => s,
                    None => return,
                }
            } else {
                b
            }
        }
    };
    if let Ok(e) = Entry::decode(&bytes) {
        assert_eq!(e.encode(), bytes, "one encoding per entry");
        let _ = e.verify(&bytes);
    }
    let mut log = replica();
    let before = log.len();
    match log.receive(&bytes, LocalMeta::default()) {
        Ok(u) => assert!(u.invalid.is_empty()),
        Err(_) => assert_eq!(log.len(), before, "a refused entry leaves no trace"),
    }
    log.verify().expect("what a replica takes in verifies");
    let _ = log.take_changes();
    let mut records = f.records.clone();
    records.push(LogRecord {
        hash: EntryHash::of(&bytes),
        bytes,
        meta: LocalMeta::default(),
    });
    let (stored, _) = RoomLog::from_stored(f.group, records);
    assert!(stored.state().is_some());
}

/// The spliced entry, if it decodes, signed again by alice's device.
fn resign(f: &super::room_fixture::Fixture, bytes: &[u8]) -> Option<Vec<u8>> {
    let e = Entry::decode(bytes).ok()?;
    let key = DeviceKey::from_bytes(&f.alice_key);
    let signed = Draft {
        group: f.group,
        message_id: e.message_id,
        parents: e.parents,
        sender_name: e.sender_name,
        timestamp: e.timestamp,
        body: e.body,
    }
    .sign(&key, &f.alice_cert)
    .ok()?;
    Some(signed.encode())
}
