//! One file per scenario (subcommand): its arguments and its run.

pub mod idle;
pub mod offline;
pub mod phone;
pub mod relay;
pub mod sender;
