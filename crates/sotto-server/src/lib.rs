//! # sotto-server
//!
//! The security platform: directory of hashed usernames, device
//! certificates and prekey pools, store-and-forward mailboxes with
//! WebSocket push, block lists, device linking and the master clock, over
//! HTTPS (rustls). The HTTP API is described in `docs/api.md` and served as
//! OpenAPI at `/openapi.json`.
//!
//! ```no_run
//! # async fn run() -> Result<(), sotto_server::ServerError> {
//! let config = sotto_server::Config::new("127.0.0.1:7443".parse().unwrap(), "./srv".into());
//! let running = sotto_server::start(config).await?;
//! println!("listening on {} (certificate {})", running.addr, running.fingerprint);
//! running.wait().await // until SIGINT/SIGTERM or a fatal error
//! # }
//! ```
//!
//! Layout: [`serve`] accepts connections and owns shutdown, [`tls`] the
//! certificate, [`api`] has one module per API area, [`auth`] checks request
//! signatures (and that a state-changing request is used once), [`hub`]
//! tracks connected devices for push, [`purge`] runs the retention task,
//! [`limits`] holds every bound the server enforces and [`rate`] its rate
//! limiters. Storage is [`sotto_store::server::ServerStore`]. Events are
//! logged through `tracing` (the `sotto server` command installs a
//! subscriber filtered by `RUST_LOG`).

mod api;
mod auth;
mod error;
mod hub;
pub mod limits;
mod metrics;
pub mod phone;
mod purge;
mod rate;
mod relay;
mod serve;
mod stall;
mod state;
mod tls;
mod tls_stream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use error::ServerError;
pub use limits::{Limits, Rate, Rates};
pub use phone::PhoneConfig;
pub use serve::Running;
#[cfg(feature = "testing")]
pub use state::testing;

/// Default retention of acknowledged datagrams (W3): 30 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// How the server is run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port (see [`Running::addr`]).
    pub listen: SocketAddr,
    /// Holds the database (SQLite), the server secret and the generated
    /// certificate (unless given elsewhere).
    pub data_dir: PathBuf,
    /// A PostgreSQL URL: the store is that database, shared with other
    /// nodes, instead of SQLite in `data_dir` (which then holds only what
    /// the node was not given: the secret and the certificate). See
    /// README.md, "Several nodes".
    pub database: Option<String>,
    pub tls: Tls,
    /// How long acknowledged datagrams are kept; zero deletes them on
    /// delivery.
    pub retention: Duration,
    /// The server secret's file; `None`: `server_secret` in `data_dir`.
    /// Kept apart from the data directory, a copy of that directory does
    /// not reveal usernames (docs/threat-model.md).
    pub secret_file: Option<PathBuf>,
    /// Timeouts, connection caps, queues, quotas and rates.
    pub limits: Limits,
    /// Delivery to phone numbers: SMS gateway, OTP lifetime, hold key.
    pub phone: PhoneConfig,
}

impl Config {
    /// A self-signed certificate in `data_dir` and 30 days of retention.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Config {
        Config {
            listen,
            data_dir,
            database: None,
            tls: Tls::SelfSigned,
            retention: DEFAULT_RETENTION,
            secret_file: None,
            limits: Limits::default(),
            phone: PhoneConfig::default(),
        }
    }
}

/// Where the TLS certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tls {
    /// Generated on first start into `data_dir` (`cert.pem`, `key.pem`) and
    /// reused afterwards, so clients can pin its fingerprint.
    SelfSigned,
    /// PEM files: a certificate chain (leaf first) and its private key.
    Files { cert: PathBuf, key: PathBuf },
}

/// Opens the store (creating the data directory and database on first
/// run), loads or makes the certificate, binds `config.listen` and starts
/// serving in the background.
pub async fn start(config: Config) -> Result<Running, ServerError> {
    serve::start(config).await
}
