//! Test support (feature `testing`): the in-memory store, the store suite
//! every backend runs, an in-memory network, and the machine's test hooks.
//! Nothing here is part of the API a program uses.

mod hooks;
mod memory;
pub mod net;
pub mod suite;

pub use memory::MemoryStore;
pub use net::{Net, Node};
