//! # sotto-loadgen
//!
//! Drives a running sotto server over real sockets (TLS, the HTTP API and
//! WebSocket push of docs/api.md) with many simulated devices, in the same
//! shapes of work as the Mosquitto baseline (`shared/tools/mqtt-loadgen`), so
//! the two can be compared in one benchmark run. See `src/main.rs` and
//! docs/PERFORMANCE.md.

pub mod net;
pub mod phone;
pub mod sim;
pub mod sms;
pub mod stats;
