//! Push across nodes. Each node pushes to the sockets it holds
//! ([`crate::hub`]); with several nodes on one PostgreSQL database a device
//! may be connected to any of them, so every push (and every "close this
//! device's sockets" of a device removal) is also handed to a [`Relay`],
//! which carries it to the other nodes, where the hub delivers it to their
//! own sockets. A node ignores what it published itself, so each socket
//! gets a push exactly once.
//!
//! The one implementation, [`PgRelay`], is PostgreSQL's LISTEN/NOTIFY on
//! the database the nodes already share: no other service to run, secure
//! and monitored with the database, and a notification is only ever sent
//! after the datagram's commit (the push follows the store's answer).
//! NATS would take the same trait (docs/PERFORMANCE.md says why not now).
//!
//! Best effort, like every push: the mailbox is the source of truth. A
//! notification lost (a publish that failed, the listening connection
//! dropped) only delays delivery until the device's next fetch; when the
//! listening connection is re-established the node closes all its sockets,
//! so that their devices reconnect and fetch what they may have missed.

use std::str::FromStr;
use std::time::Duration;

use futures_util::StreamExt;
use rand_core::{OsRng, RngCore};
use sotto_proto::DeviceId;
use tokio::sync::{mpsc, watch};
use tokio_postgres::{AsyncMessage, NoTls};

use crate::state::AppState;
use crate::ServerError;

/// What one node tells the others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Relayed {
    /// A push frame (JSON, as sent on the socket) for `device`.
    Push { device: DeviceId, frame: String },
    /// Close every socket of `device` (it was removed).
    Close { device: DeviceId },
}

/// Carries pushes to the other nodes.
pub(crate) trait Relay: Send + Sync {
    /// Hands `message` over without waiting (dropped, with a log line, if
    /// the relay is far behind).
    fn publish(&self, message: Relayed);
}

/// The NOTIFY channel.
const CHANNEL: &str = "sotto_push";
/// Largest datagram pushed inline when a relay is on: its frame (base64
/// and JSON) stays under PostgreSQL's 8000-byte NOTIFY payload. Larger ones
/// go as notices, which the device fetches.
pub(crate) const INLINE_BYTES: usize = 4096;
/// Largest payload sent.
const MAX_PAYLOAD: usize = 7900;
/// Messages waiting to be published; beyond, new ones are dropped.
const QUEUE: usize = 16_384;
/// Notifications published in one statement.
const BATCH: usize = 256;
const RETRY: Duration = Duration::from_secs(1);

/// LISTEN/NOTIFY on the shared database.
pub(crate) struct PgRelay {
    node: String,
    queue: mpsc::Sender<String>,
}

impl PgRelay {
    /// Connects the listening side (so that this node hears every push
    /// published after `start` returns) and starts the publishing side.
    /// Both run until `shutdown`.
    pub async fn start(
        url: &str,
        state: AppState,
        shutdown: watch::Receiver<bool>,
    ) -> Result<PgRelay, ServerError> {
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|e| ServerError::Database(format!("not a PostgreSQL URL ({e})")))?;
        let mut node = [0u8; 8];
        OsRng.fill_bytes(&mut node);
        let node = hex::encode(node);
        let listening = listen(&config)
            .await
            .map_err(|e| ServerError::Database(format!("LISTEN: {e}")))?;
        tokio::spawn(hear(
            config.clone(),
            listening,
            node.clone(),
            state,
            shutdown.clone(),
        ));
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(publish(config, rx, shutdown));
        Ok(PgRelay { node, queue })
    }
}

impl Relay for PgRelay {
    fn publish(&self, message: Relayed) {
        let payload = encode(&self.node, &message);
        if payload.len() > MAX_PAYLOAD {
            tracing::debug!(
                bytes = payload.len(),
                "push too large to relay; the device fetches it"
            );
            return;
        }
        if self.queue.try_send(payload).is_err() {
            tracing::warn!(
                "push relay behind: a push to another node was dropped (the device fetches it)"
            );
        }
    }
}

/// `node:p:device:frame` or `node:c:device`.
fn encode(node: &str, message: &Relayed) -> String {
    match message {
        Relayed::Push { device, frame } => format!("{node}:p:{}:{frame}", hex::encode(device.0)),
        Relayed::Close { device } => format!("{node}:c:{}", hex::encode(device.0)),
    }
}

/// (publishing node, message); `None` for anything malformed.
fn decode(payload: &str) -> Option<(&str, Relayed)> {
    let mut parts = payload.splitn(4, ':');
    let (node, kind, device) = (parts.next()?, parts.next()?, parts.next()?);
    let mut id = [0u8; 32];
    hex::decode_to_slice(device, &mut id).ok()?;
    let device = DeviceId(id);
    let message = match (kind, parts.next()) {
        ("p", Some(frame)) => Relayed::Push {
            device,
            frame: frame.to_owned(),
        },
        ("c", None) => Relayed::Close { device },
        _ => return None,
    };
    Some((node, message))
}

/// A listening connection: its notifications arrive on `rx`, which
/// closes when the connection is lost.
struct Listening {
    /// The connection lives as long as its client.
    _client: tokio_postgres::Client,
    rx: mpsc::Receiver<String>,
}

async fn listen(config: &tokio_postgres::Config) -> Result<Listening, tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(n) = message {
                if tx.send(n.payload().to_owned()).await.is_err() {
                    break;
                }
            }
        }
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    Ok(Listening {
        _client: client,
        rx,
    })
}

async fn hear(
    config: tokio_postgres::Config,
    mut listening: Listening,
    node: String,
    state: AppState,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            payload = listening.rx.recv() => match payload {
                Some(payload) => match decode(&payload) {
                    Some((from, _)) if from == node => {}
                    Some((_, Relayed::Push { device, frame })) => state.hub.deliver(&device, frame),
                    // A removed device: refused here at once too (not
                    // only once its cache entry expires).
                    Some((_, Relayed::Close { device })) => {
                        state.forget_device(&device);
                        state.hub.close_local(&device);
                    }
                    None => tracing::warn!("malformed push relay notification ignored"),
                },
                None => {
                    tracing::warn!("push relay: listening connection lost; reconnecting");
                    listening = loop {
                        tokio::select! {
                            _ = tokio::time::sleep(RETRY) => {}
                            _ = shutdown.changed() => return,
                        }
                        match listen(&config).await {
                            Ok(l) => break l,
                            Err(e) => tracing::warn!(error = %e, "push relay: cannot listen yet"),
                        }
                    };
                    // Pushes may have been missed meanwhile: make every
                    // device here reconnect and fetch.
                    state.hub.close_everyone();
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}

async fn publish(
    config: tokio_postgres::Config,
    mut queue: mpsc::Receiver<String>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut client: Option<tokio_postgres::Client> = None;
    loop {
        let first = tokio::select! {
            first = queue.recv() => match first {
                Some(p) => p,
                None => return,
            },
            _ = shutdown.changed() => return,
        };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match queue.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let connected = matches!(&client, Some(c) if !c.is_closed());
        if !connected {
            client = match config.connect(NoTls).await {
                Ok((c, connection)) => {
                    tokio::spawn(connection);
                    Some(c)
                }
                Err(e) => {
                    tracing::warn!(error = %e, dropped = batch.len(), "push relay: cannot connect to publish");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            };
        }
        let Some(c) = &client else { continue };
        let sql = format!("SELECT pg_notify('{CHANNEL}', p) FROM unnest($1::text[]) AS p");
        if let Err(e) = c.execute(sql.as_str(), &[&batch]).await {
            tracing::warn!(error = %e, dropped = batch.len(), "push relay: publish failed");
            client = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_garbage_is_refused() {
        let device = DeviceId([7; 32]);
        for m in [
            Relayed::Push {
                device,
                frame: r#"{"type":"message","a:b":1}"#.into(),
            },
            Relayed::Close { device },
        ] {
            let p = encode("n1", &m);
            assert_eq!(decode(&p), Some(("n1", m)));
        }
        let d = "07".repeat(32);
        let wrong_kind = format!("n1:x:{d}:{{}}");
        let close_with_frame = format!("n1:c:{d}:{{}}");
        let push_without_frame = format!("n1:p:{d}");
        for bad in [
            "",
            "n1",
            "n1:p",
            "n1:c:zz",
            "n1:p:0707:{}",
            &wrong_kind,
            &close_with_frame,
            &push_without_frame,
        ] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }
}
