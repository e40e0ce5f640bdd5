//! Accepting connections and shutting down. Each TCP connection gets its
//! own task: TLS handshake (bounded in time), then HTTP/1.1 with upgrades
//! (WebSocket) served by the axum router. What one client can hold is
//! bounded ([`crate::Limits`]): connections per address and in all, a
//! header timeout (hyper), a body timeout (the router) and a write timeout
//! ([`StallGuard`]). Shutdown is explicit: stop accepting, let connections
//! finish their current request, wait for them (a bounded time), then
//! close the store so queued writes complete.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use sotto_store::server::phone::PhoneStore;
use sotto_store::server::{PostgresStore, ServerStore, SqliteStore, StoreError};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;

use crate::error::io_reason;
use crate::limits::Limits;
use crate::rate::ClientAddr;
use crate::relay::PgRelay;
use crate::stall::StallGuard;
use crate::state::AppState;
use crate::{api, purge, tls, Config, ServerError};

const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A running server. Dropping it stops the server (as [`Running::shutdown`]
/// does, without waiting).
pub struct Running {
    /// The bound address (the real port when `listen` had port 0).
    pub addr: SocketAddr,
    /// Lowercase hex SHA-256 of the leaf certificate (DER), 64 characters:
    /// what clients pin.
    pub fingerprint: String,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<Result<(), ServerError>>>,
}

impl Running {
    /// Stops accepting, lets open requests finish and WebSockets write
    /// their close frame (1001) (up to 5 s for both), then closes the
    /// store.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Serves until SIGINT or SIGTERM (then shuts down cleanly) or a fatal
    /// error.
    pub async fn wait(mut self) -> Result<(), ServerError> {
        let mut task = self
            .task
            .take()
            .expect("the server task is present until consumed");
        tokio::select! {
            result = &mut task => result.unwrap_or_else(|e| Err(ServerError::Fatal(e.to_string()))),
            _ = stop_signal() => {
                let _ = self.shutdown.send(true);
                task.await.unwrap_or_else(|e| Err(ServerError::Fatal(e.to_string())))
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Every node sharing a store must seal with the same hold key: one with
/// another key (started without the shared key file, it made its own)
/// could open nothing the others held. Such a node serves everything else
/// but answers the phone endpoints 503 `phone_unavailable`, and says why
/// at start. Whether this node may deliver to phone numbers.
fn bind_hold_key(
    store: &dyn PhoneStore,
    vault: &crate::phone::vault::Vault,
    file: &std::path::Path,
) -> Result<bool, ServerError> {
    use sotto_store::server::phone::HoldKeyCheck;
    match store.bind_hold_key(&vault.check_value()) {
        Ok(HoldKeyCheck::Bound | HoldKeyCheck::Same) => Ok(true),
        Ok(HoldKeyCheck::Different) => {
            tracing::error!(
                hold_key = %file.display(),
                "this hold key is not the one the database was first used with: delivery to \
                 phone numbers is off on this node (give every node the same hold key file, \
                 or SOTTO_HOLD_KEY)"
            );
            Ok(false)
        }
        Err(e) => Err(ServerError::Database(e.to_string())),
    }
}

pub(crate) async fn start(config: Config) -> Result<Running, ServerError> {
    let dir = config.data_dir.clone();
    let tls_config = config.tls.clone();
    // Opening the database and reading or generating the certificate is
    // blocking file work.
    let secret_file = config.secret_file.clone();
    let hold_key =
        crate::phone::hold_key_path(&config.data_dir, config.phone.hold_key_file.as_deref());
    let database = config.database.clone();
    let (store, phone_store, tls, vault) = tokio::task::spawn_blocking(move || {
        let data_dir_error = |e: StoreError| ServerError::DataDir {
            dir: dir.clone(),
            reason: match e {
                StoreError::Io(io) => io_reason(&io),
                other => other.to_string(),
            },
        };
        let (store, phone_store): (Arc<dyn ServerStore>, Option<Arc<dyn PhoneStore>>) =
            match &database {
                None => {
                    let sqlite = Arc::new(
                        SqliteStore::open_with(&dir, secret_file.as_deref())
                            .map_err(data_dir_error)?,
                    );
                    (sqlite.clone(), Some(sqlite))
                }
                Some(url) => {
                    create_private_dir(&dir).map_err(|e| data_dir_error(e.into()))?;
                    let secret = secret_file
                        .clone()
                        .unwrap_or_else(|| dir.join(sotto_store::server::SECRET_FILE));
                    let pg = PostgresStore::open(url, &secret).map_err(|e| match e {
                        StoreError::Io(io) => ServerError::DataDir {
                            dir: secret.clone(),
                            reason: io_reason(&io),
                        },
                        other => ServerError::Database(other.to_string()),
                    })?;
                    let pg = Arc::new(pg);
                    (pg.clone(), Some(pg))
                }
            };
        if let Some(file) = &secret_file {
            let copy = dir.join(sotto_store::server::SECRET_FILE);
            if copy.exists() && copy != *file {
                tracing::warn!(
                    path = %copy.display(),
                    "the data directory still holds a server secret; delete it so a copy of the directory does not include it"
                );
            }
        }
        let tls = tls::load(&tls_config, &dir)?;
        let vault = crate::phone::vault::Vault::load(&hold_key).map_err(|e| ServerError::DataDir {
            dir: dir.clone(),
            reason: e.to_string(),
        })?;
        let phone_store = match phone_store {
            Some(p) if bind_hold_key(&*p, &vault, &hold_key)? => Some(p),
            _ => None,
        };
        Ok::<_, ServerError>((store, phone_store, tls, vault))
    })
    .await
    .map_err(|e| ServerError::Fatal(e.to_string()))??;

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| ServerError::Listen {
            addr: config.listen,
            reason: io_reason(&e),
        })?;
    let addr = listener.local_addr().map_err(|e| ServerError::Listen {
        addr: config.listen,
        reason: io_reason(&e),
    })?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let retention_ms = config.retention.as_millis().min(u64::MAX as u128) as u64;
    let outgoing_ca = match &config.phone.outgoing_ca {
        Some(path) => {
            crate::phone::load_ca_file(path).map_err(|reason| ServerError::Certificate {
                path: path.clone(),
                reason,
            })?
        }
        None => Vec::new(),
    };
    let http =
        crate::phone::http_client(&outgoing_ca).map_err(|reason| ServerError::Certificate {
            path: config.phone.outgoing_ca.clone().unwrap_or_default(),
            reason,
        })?;
    // The SMS provider is reached through the public roots only: a CA
    // trusted for a sender's webhook must not be able to pose as the
    // provider (it would read every OTP).
    let provider_http = crate::phone::http_client(&[]).map_err(ServerError::Fatal)?;
    let sms = crate::phone::sms::gateway(&config.phone.sms, &provider_http);
    if let Some(g) = &sms {
        if g.is_development() {
            tracing::warn!("SMS go to the development sink: development only, inbound SMS are accepted unsigned");
        }
    }
    let public_url = config
        .phone
        .public_url
        .clone()
        .unwrap_or_else(|| format!("https://{addr}"));
    let phone = Arc::new(crate::phone::Phone::new(
        phone_store,
        vault,
        sms,
        config.phone.otp_ttl,
        public_url,
        http,
    ));
    let state = AppState::new(
        store,
        retention_ms,
        config.limits,
        shutdown_rx.clone(),
        phone.clone(),
    );
    if let Some(url) = &config.database {
        // Listening before serving: no push published from now on is
        // missed.
        let relay = PgRelay::start(url, state.clone(), shutdown_rx.clone()).await?;
        state.hub.set_relay(Box::new(relay));
    }
    let router = api::router(state.clone());
    tokio::spawn(crate::hub::beat(state.clone(), shutdown_rx.clone()));
    let purge_task = tokio::spawn(purge::run(state.clone()));
    tokio::spawn(crate::phone::worker::run(state.clone(), phone));
    let server_tls = tls.config;
    let task = tokio::spawn(accept_loop(
        listener,
        server_tls,
        router,
        state,
        shutdown_rx,
        purge_task,
    ));
    Ok(Running {
        addr,
        fingerprint: tls.fingerprint,
        shutdown: shutdown_tx,
        task: Some(task),
    })
}

async fn accept_loop(
    listener: TcpListener,
    server_tls: Arc<rustls::ServerConfig>,
    router: Router,
    state: AppState,
    mut shutdown: watch::Receiver<bool>,
    purge_task: JoinHandle<()>,
) -> Result<(), ServerError> {
    // Every connection task holds a clone of `drain`; when all are gone the
    // receiver yields None.
    let (drain, mut drained) = mpsc::channel::<()>(1);
    let limits = state.limits.clone();
    // Bounds the HTTP connections served at once; beyond it new ones wait
    // in the kernel's backlog instead of exhausting memory or descriptors.
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = Arc::new(PerAddress::new(limits.connections_per_address));
    loop {
        let slot = tokio::select! {
            _ = shutdown.changed() => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let addr = ClientAddr(peer);
                    // Over its address's share: closed before any TLS work.
                    let Some(held) = per_address.clone().hold(addr.key()) else {
                        tracing::debug!(peer = %addr.key(), "connection refused: too many from this address");
                        continue;
                    };
                    let _ = tcp.set_nodelay(true);
                    let (server_tls, router, shutdown, drain, limits) =
                        (server_tls.clone(), router.clone(), shutdown.clone(), drain.clone(), limits.clone());
                    let open = crate::metrics::Open::new(&state.metrics.connections);
                    tokio::spawn(async move {
                        let _open = open;
                        connection(tcp, addr, server_tls, router, &limits, shutdown, drain).await;
                        drop(held);
                        drop(slot);
                    });
                }
                // Out of file descriptors and the like: back off rather
                // than spin; the listener itself stays valid.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
            },
        }
    }
    drop(listener);
    drop(drain);
    drop(router);
    let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    let _ = tokio::time::timeout_at(deadline, drained.recv()).await;
    // A WebSocket is no HTTP connection any more (hyper hands the socket
    // over at the upgrade): wait, within the same time, for the sessions
    // to write their close frame (1001, so devices reconnect at once, to
    // another node) and for the sends they left running to commit.
    let _ = tokio::time::timeout_at(deadline, state.hub.sockets_closed()).await;
    let _ = purge_task.await;
    // Close the store off the runtime: dropping it joins the writer thread
    // after the queued writes. (Requests still running elsewhere keep their
    // own reference; the store then closes when they finish.)
    let store = state.store.clone();
    drop(state);
    let _ = tokio::task::spawn_blocking(move || drop(store)).await;
    Ok(())
}

/// Connections held per client address (see [`Limits::connections_per_address`]).
struct PerAddress {
    max: usize,
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection counted for its address until dropped.
struct Held {
    counts: Arc<PerAddress>,
    addr: IpAddr,
}

impl PerAddress {
    fn new(max: usize) -> PerAddress {
        PerAddress {
            max,
            held: Mutex::new(HashMap::new()),
        }
    }

    fn hold(self: Arc<Self>, addr: IpAddr) -> Option<Held> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let n = held.entry(addr).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        drop(held);
        Some(Held { counts: self, addr })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = self.counts.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&self.addr) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.addr);
            }
        }
    }
}

async fn connection(
    tcp: TcpStream,
    addr: ClientAddr,
    server_tls: Arc<rustls::ServerConfig>,
    router: Router,
    limits: &Limits,
    mut shutdown: watch::Receiver<bool>,
    _drain: mpsc::Sender<()>,
) {
    let tcp = StallGuard::new(tcp, limits.write_timeout);
    let tls = match tokio::time::timeout(
        limits.handshake_timeout,
        crate::tls_stream::accept(tcp, server_tls),
    )
    .await
    {
        Ok(Ok(tls)) => tls,
        _ => return, // not TLS, or too slow: nothing to answer
    };
    // Every request learns the address it came from (per-address limits).
    let service = TowerToHyperService::new(tower::util::MapRequest::new(
        router,
        move |mut req: axum::http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(addr);
            req
        },
    ));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(TokioIo::new(tls), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// The data directory (mode 0700), as the SQLite store makes it.
fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}
