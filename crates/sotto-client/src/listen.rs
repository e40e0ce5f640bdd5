//! The push channel: a WebSocket on which the server announces new mailbox
//! items as they arrive, with reconnects and a sync on every (re)connect.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sotto_api::{paths, Push};
use sotto_device::SyncReport;

use crate::net::local_ms;
use crate::{Client, Error, Event, Result};

impl Client {
    /// Stays connected to the server's push channel and calls `on_event`
    /// for each message as it arrives. On (re)connecting it first fetches
    /// what waited. Reconnects after drops with backoff (1 s to 30 s).
    /// Returns only on errors that retrying cannot fix (wrong certificate,
    /// local store failure); cancel it by dropping the future.
    pub async fn listen<F: FnMut(Event)>(&mut self, mut on_event: F) -> Result<()> {
        let mut backoff = Duration::from_secs(1);
        loop {
            let reason = match self.listen_once(&mut on_event).await {
                Ok(reason) => {
                    backoff = Duration::from_secs(1);
                    reason
                }
                Err(
                    e @ (Error::ServerUnreachable { .. }
                    | Error::Server { .. }
                    | Error::BadResponse(_)),
                ) => e.to_string(),
                Err(e) => return Err(e),
            };
            on_event(Event::Disconnected {
                reason,
                retry_in: backoff,
            });
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    /// One connection; `Ok(reason)` when it closed.
    async fn listen_once<F: FnMut(Event)>(&mut self, on_event: &mut F) -> Result<String> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::Message as Ws;
        let api = self.api()?;
        let url = format!(
            "wss{}{}",
            api.base.strip_prefix("https").unwrap_or(&api.base),
            paths::WS
        );
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| Error::BadServerUrl(format!("{url}: {e}")))?;
        for (k, v) in api
            .auth_headers("GET", paths::WS, b"", self.core.device().key())
            .await?
        {
            request.headers_mut().insert(
                k,
                v.parse().map_err(|_| Error::BadResponse("header".into()))?,
            );
        }
        let connector = tokio_tungstenite::Connector::Rustls(api.tls.clone());
        let (mut ws, _) =
            tokio_tungstenite::connect_async_tls_with_config(request, None, true, Some(connector))
                .await
                .map_err(|e| match e {
                    tokio_tungstenite::tungstenite::Error::Http(r) => Error::Server {
                        status: r.status().as_u16(),
                        code: String::new(),
                        message: "push refused".into(),
                    },
                    other => api.transport_error(other.to_string()),
                })?;
        // First what waited while we were away.
        let report = self.sync().await?;
        on_event(Event::Connected);
        emit(report, on_event);
        loop {
            let frame = tokio::select! {
                f = ws.next() => f,
                _ = tokio::time::sleep(Duration::from_secs(30)) => {
                    if ws.send(Ws::Ping(Vec::new())).await.is_err() {
                        return Ok("push channel lost".into());
                    }
                    continue;
                }
            };
            let Some(frame) = frame else {
                return Ok("the server closed the push channel".into());
            };
            let frame = match frame {
                Ok(f) => f,
                Err(e) => return Ok(format!("push channel error: {e}")),
            };
            match frame {
                Ws::Text(t) => match serde_json::from_str::<Push>(&t) {
                    Ok(Push::Message(item)) => {
                        let _guard = self.begin().await?;
                        self.receive(std::slice::from_ref(&item)).await?;
                        self.core.flush(local_ms())?;
                        self.drain().await?;
                        emit(self.report(), on_event);
                    }
                    // Too large to push inline: it waits in the mailbox.
                    Ok(Push::Notice(_)) => emit(self.sync().await?, on_event),
                    Ok(Push::PrekeysLow(_)) => {
                        self.refill_prekeys_if_low().await?;
                    }
                    // This socket sends nothing, so it is answered nothing.
                    Ok(Push::SendResult(_)) | Err(_) => {}
                },
                Ws::Close(_) => return Ok("the server closed the push channel".into()),
                _ => {}
            }
        }
    }
}

/// Reports refusals, then messages, then room lines, then failures.
fn emit<F: FnMut(Event)>(report: SyncReport, on_event: &mut F) {
    for r in report.rejected {
        on_event(Event::Rejected(r));
    }
    for m in report.messages {
        on_event(Event::Message(m));
    }
    for e in report.room {
        on_event(Event::Room(e));
    }
    for e in report.failures {
        on_event(Event::Failed(e));
    }
}
