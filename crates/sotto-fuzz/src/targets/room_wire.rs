//! The room wire (entries with content, history requests and answers) on
//! hostile input. The first byte picks who asks; the rest is decoded as a
//! [`RoomWire`]. A request is answered by a replica of the fixture room
//! (for a current member, the removed member, or a stranger); an answer is
//! taken in by a fresh replica and by the fixture's.
//!
//! Invariants: what decodes encodes to the same bytes; an answer made for
//! any request encodes; whatever an answer brings, the replica still
//! verifies, and a removed member is never answered with an entry from
//! after its removal.

use sotto_proto::room::*;
use sotto_proto::*;

use super::room_fixture::{fixture, replica};

/// The target: see the module documentation.
pub fn run(data: &[u8]) {
    let [who, rest @ ..] = data else {
        return;
    };
    let Ok(wire) = RoomWire::decode(rest) else {
        return;
    };
    assert_eq!(wire.encode().ok().as_deref(), Some(rest), "one encoding");
    let f = fixture();
    match wire {
        RoomWire::Entry { entry, content } => {
            let mut log = replica();
            let payload = Payload {
                message_id: Entry::decode(&entry).map_or([0; 16], |e| e.message_id),
                conversation: f.group.0,
                sender: f.alice,
                sent_at: 0,
                ttl: 0,
                content_type: content::ROOM_CONTROL,
                body: Vec::new(),
            };
            let sender = Entry::decode(&entry).map(|e| e.sender).ok();
            if let Some(cert) = sender {
                let _ =
                    log.receive_delivery(&cert, &payload, &entry, content, LocalMeta::default());
                log.verify().expect("verifies");
            }
        }
        RoomWire::Request(req) => {
            let log = replica();
            let requester = match who % 3 {
                0 => Requester::Member(f.alice),
                1 => Requester::Member(f.carol),
                _ => Requester::Member(UserPublic([7; 32])),
            };
            let Ok(ans) = log.answer(&req, requester, |_| None) else {
                return;
            };
            RoomWire::Answer(ans.clone())
                .encode()
                .expect("an answer fits the wire");
            if requester == Requester::Member(f.carol) {
                // Nothing after carol's removal (the last record renames).
                let last = f.records.last().expect("records").hash;
                assert!(ans.entries.iter().all(|e| EntryHash::of(e) != last));
            }
        }
        RoomWire::Answer(ans) => {
            let mut fresh = RoomLog::new(f.group);
            let _ = fresh.receive_answer(&ans);
            fresh.verify().expect("verifies");
            let mut log = replica();
            let _ = log.receive_answer(&ans);
            log.verify().expect("verifies");
        }
    }
}
