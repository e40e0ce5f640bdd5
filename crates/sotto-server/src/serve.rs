//! Accepting connections and shutting down. Each TCP connection gets its
//! own task: TLS handshake (bounded in time), then HTTP/1.1 with upgrades
//! (WebSocket) served by the axum router. Shutdown is explicit: stop
//! accepting, let connections finish their current request, wait for them
//! (a bounded time), then close the store so queued writes complete.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use sotto_store::server::{ServerStore, SqliteStore, StoreError};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::error::io_reason;
use crate::state::AppState;
use crate::{api, purge, tls, Config, ServerError};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP connections served at once (a WebSocket leaves this count once
/// upgraded; its cost is one task and a bounded push queue).
const MAX_CONNECTIONS: usize = 8192;

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
    /// Stops accepting, lets open requests finish (up to 5 s), closes
    /// WebSockets and the store.
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

pub(crate) async fn start(config: Config) -> Result<Running, ServerError> {
    let dir = config.data_dir.clone();
    let tls_config = config.tls.clone();
    // Opening the database and reading or generating the certificate is
    // blocking file work.
    let (store, tls) = tokio::task::spawn_blocking(move || {
        let store = SqliteStore::open(&dir).map_err(|e| ServerError::DataDir {
            dir: dir.clone(),
            reason: match e {
                StoreError::Io(io) => io_reason(&io),
                other => other.to_string(),
            },
        })?;
        let tls = tls::load(&tls_config, &dir)?;
        Ok::<_, ServerError>((store, tls))
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
    let store: Arc<dyn ServerStore> = Arc::new(store);
    let state = AppState::new(store, retention_ms, shutdown_rx.clone());
    let router = api::router(state.clone());
    let purge_task = tokio::spawn(purge::run(state.clone()));
    let acceptor = TlsAcceptor::from(tls.config);
    let task = tokio::spawn(accept_loop(
        listener,
        acceptor,
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
    acceptor: TlsAcceptor,
    router: Router,
    state: AppState,
    mut shutdown: watch::Receiver<bool>,
    purge_task: JoinHandle<()>,
) -> Result<(), ServerError> {
    // Every connection task holds a clone of `drain`; when all are gone the
    // receiver yields None.
    let (drain, mut drained) = mpsc::channel::<()>(1);
    // Bounds the HTTP connections served at once; beyond it new ones wait
    // in the kernel's backlog instead of exhausting memory or descriptors.
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            _ = shutdown.changed() => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    let _ = tcp.set_nodelay(true);
                    let (acceptor, router, shutdown, drain) =
                        (acceptor.clone(), router.clone(), shutdown.clone(), drain.clone());
                    tokio::spawn(async move {
                        connection(tcp, acceptor, router, shutdown, drain).await;
                        drop(slot);
                    });
                }
                // Out of file descriptors and the like: back off rather
                // than spin; the listener itself stays valid.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
        }
    }
    drop(listener);
    drop(drain);
    drop(router);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, drained.recv()).await;
    let _ = purge_task.await;
    // Close the store off the runtime: dropping it joins the writer thread
    // after the queued writes. (Requests still running elsewhere keep their
    // own reference; the store then closes when they finish.)
    let store = state.store.clone();
    drop(state);
    let _ = tokio::task::spawn_blocking(move || drop(store)).await;
    Ok(())
}

async fn connection(
    tcp: TcpStream,
    acceptor: TlsAcceptor,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
    _drain: mpsc::Sender<()>,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        _ => return, // not TLS, or too slow: nothing to answer
    };
    let service = TowerToHyperService::new(router);
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
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
