//! Test support (feature `testing`): the in-memory store, the store suite
//! every backend runs, an in-memory network, and the machine's test hooks.
//! Nothing here is part of the API a program uses.

mod hooks;
mod memory;
pub mod net;
pub mod suite;

pub use hooks::ForgedEntry;
pub use memory::MemoryStore;
pub use net::{Net, Node};

use crate::rooms::{LineContent, RoomNotice, RoomView};

/// A room's messages as `from: text`, in timeline order.
pub fn room_messages(v: &RoomView) -> Vec<String> {
    v.lines
        .iter()
        .filter_map(|l| match &l.content {
            LineContent::Message(t) => Some(format!("{}: {t}", l.from)),
            LineContent::Notice(_) => None,
        })
        .collect()
}

/// A room's notices with who caused them, in timeline order.
pub fn room_notices(v: &RoomView) -> Vec<(String, RoomNotice)> {
    v.lines
        .iter()
        .filter_map(|l| match &l.content {
            LineContent::Notice(n) => Some((l.from.clone(), n.clone())),
            LineContent::Message(_) => None,
        })
        .collect()
}
