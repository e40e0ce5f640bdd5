//! The phone features' background work, every second: posts due in the
//! outbox (SMS through the gateway, events to the senders' webhooks) with
//! exponential backoff (nothing is dropped: an item stays queued until
//! posted), replies waiting in the sender devices' mailboxes, held
//! messages past their expiry, and `sent` messages a device acknowledged.

use std::sync::Arc;
use std::time::Duration;

use sotto_proto::{Datagram, Session};
use sotto_store::server::phone::{OutboxItem, OutboxKind, SenderRecord, CLAIM_LEASE_MS};

use super::{agent, context, webhook, Phone, OUTBOX_SMS, OUTBOX_WEBHOOK};
use crate::state::{now_ms, AppState};

const EVERY: Duration = Duration::from_secs(1);
const BATCH: u32 = 64;
/// How long a held message whose delivery failed rests before the
/// background job tries it again.
const HELD_RETRY_MS: u64 = 30 * 1000;
/// Longest wait between two attempts of one post.
const MAX_BACKOFF_MS: u64 = 10 * 60 * 1000;

pub(crate) async fn run(state: AppState, phone: Arc<Phone>) {
    if !phone.available() {
        return;
    }
    let mut shutdown = state.shutdown.clone();
    let http = phone.http.clone();
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = round(&state, &phone, &http).await {
                    tracing::warn!(error = %e.message, "phone worker round failed");
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

async fn round(
    state: &AppState,
    phone: &Phone,
    http: &reqwest::Client,
) -> Result<(), crate::api::ApiError> {
    let now = now_ms();
    for m in phone.db(move |s| s.expire_held(now)).await? {
        tracing::info!(id = %m.id, "held message expired and erased");
        phone
            .queue_webhook(m.sender_id, webhook::status_event(&m.id, "expired"))
            .await?;
    }
    for m in phone.db(move |s| s.mark_delivered(now)).await? {
        phone
            .queue_webhook(m.sender_id, webhook::status_event(&m.id, "delivered"))
            .await?;
    }
    replies(state, phone).await?;
    // Held messages a delivery left behind (it failed, or its node died):
    // not only a later verify delivers them.
    let owner = super::deliver::new_owner();
    let held = phone
        .db(move |s| s.claim_registered(&owner, now, CLAIM_LEASE_MS, HELD_RETRY_MS, BATCH))
        .await?;
    if !held.is_empty() {
        let n = held.len();
        let delivered = super::deliver::deliver_claimed(state, phone, &owner, held).await;
        tracing::info!(
            claimed = n,
            delivered,
            "held messages of registered numbers retried"
        );
    }
    // Every post is leased to this round (`owner`) when taken, and the
    // lease renewed just before it is posted: a round slower than a lease
    // finds the posts another node took over and leaves them to it.
    let owner = super::deliver::new_owner();
    if let Some(sms) = phone.sms.clone() {
        for item in phone
            .db(move |s| s.due(OutboxKind::Sms, &owner, now, BATCH, CLAIM_LEASE_MS))
            .await?
        {
            if !renew(phone, &item, &owner).await? {
                continue;
            }
            let outcome = match phone.vault.open(OUTBOX_SMS, &item.sealed) {
                Ok(plain) => {
                    let v: serde_json::Value = serde_json::from_slice(&plain).unwrap_or_default();
                    let (to, text) = (
                        v["to"].as_str().unwrap_or(""),
                        v["text"].as_str().unwrap_or(""),
                    );
                    sms.send(to, text).await.map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            settle(phone, &item, &owner, "sms", outcome).await?;
        }
    }
    for item in phone
        .db(move |s| s.due(OutboxKind::Webhook, &owner, now, BATCH, CLAIM_LEASE_MS))
        .await?
    {
        if !renew(phone, &item, &owner).await? {
            continue;
        }
        let outcome = post_webhook(phone, http, &item).await;
        settle(phone, &item, &owner, "webhook", outcome).await?;
    }
    Ok(())
}

/// Renews this round's lease of `item` just before posting it; false if
/// another node took it over (it posts it, this round must not).
async fn renew(
    phone: &Phone,
    item: &OutboxItem,
    owner: &[u8; 16],
) -> Result<bool, crate::api::ApiError> {
    let (id, owner) = (item.id, *owner);
    let mine = phone
        .db(move |s| s.renew_lease(id, &owner, now_ms(), CLAIM_LEASE_MS))
        .await?;
    if !mine {
        tracing::info!(
            id,
            "an outbox post was taken over by another node; not posting it"
        );
    }
    Ok(mine)
}

/// Posted: removed from the outbox; failed: tried again later.
async fn settle(
    phone: &Phone,
    item: &OutboxItem,
    owner: &[u8; 16],
    what: &'static str,
    outcome: Result<(), String>,
) -> Result<(), crate::api::ApiError> {
    let (id, owner) = (item.id, *owner);
    match outcome {
        Ok(()) => phone.db(move |s| s.posted(id, &owner)).await.map(drop),
        Err(reason) => {
            let backoff = (1000u64 << item.attempts.min(20)).min(MAX_BACKOFF_MS);
            tracing::warn!(what, id, attempts = item.attempts + 1, %reason, retry_in_ms = backoff, "post failed; retrying later");
            let next = now_ms().saturating_add(backoff);
            phone
                .db(move |s| s.retry_at(id, &owner, next))
                .await
                .map(drop)
        }
    }
}

async fn post_webhook(
    phone: &Phone,
    http: &reqwest::Client,
    item: &OutboxItem,
) -> Result<(), String> {
    let sid = item.sender_id;
    let sender = phone
        .db(move |s| s.sender_by_id(sid))
        .await
        .map_err(|e| e.message)?
        .ok_or("unknown sender")?;
    let body = phone
        .vault
        .open(OUTBOX_WEBHOOK, &item.sealed)
        .map_err(|e| e.to_string())?;
    let event: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    let secrets = phone.secrets(&sender).map_err(|e| e.message)?;
    let t = now_ms() / 1000;
    let response = http
        .post(&sender.webhook)
        .timeout(super::WEBHOOK_TIMEOUT)
        .header("content-type", "application/json")
        .header(webhook::EVENT_HEADER, event["id"].as_str().unwrap_or(""))
        .header(
            webhook::SIGNATURE_HEADER,
            webhook::signature(&secrets.webhook_secret[..], t, &body),
        )
        .body(body.to_vec())
        .send()
        .await
        .map_err(|e| super::error_chain(&e))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {}", response.status()))
    }
}

/// Opens what waits in each sender device's mailbox (replies from
/// users), queues each text for the sender's webhook, and acknowledges.
async fn replies(state: &AppState, phone: &Phone) -> Result<(), crate::api::ApiError> {
    let senders = phone.db(|s| s.senders()).await?;
    for sender in senders {
        let device = sender.device;
        let (items, _) = state.db(move |s| s.fetch(&device, 0, 64, 1 << 20)).await?;
        if items.is_empty() {
            continue;
        }
        let mut acked = Vec::new();
        for item in items {
            if let Some(event) = open_reply(state, phone, &sender, &item.datagram).await? {
                phone.queue_webhook(sender.id, event).await?;
            }
            acked.push(item.seq);
        }
        let retention = state.retention_ms;
        state
            .db(move |s| s.ack(&device, &acked, now_ms(), retention))
            .await?;
    }
    Ok(())
}

/// A reply event for one datagram to the sender's device, or `None` when
/// it is not a readable text from the user it claims to be from.
async fn open_reply(
    state: &AppState,
    phone: &Phone,
    sender: &SenderRecord,
    datagram: &[u8],
) -> Result<Option<serde_json::Value>, crate::api::ApiError> {
    let sid = sender.id;
    let session_id = match Datagram::decode(datagram) {
        Ok(dg) => match dg.entries.iter().find(|e| e.recipient == sender.device) {
            Some(e) => e.session.0,
            None => return Ok(None),
        },
        Err(_) => return Ok(None),
    };
    let _locked = phone.lock_sender(sid).await?;
    let secrets = phone.secrets(sender)?;
    let ctx = context("session", &sid.to_string());
    let mut sessions = Vec::new();
    if let Some(blob) = phone
        .db(move |s| s.sender_session(sid, &session_id))
        .await?
    {
        if let Ok(plain) = phone.vault.open(&ctx, &blob) {
            if let Ok(s) = Session::from_bytes(&plain) {
                sessions.push(s);
            }
        }
    }
    let Some(mut device) = agent::device(&secrets, &sender.cert, sessions) else {
        return Ok(None);
    };
    let opened = match device.open(datagram) {
        Ok(o) => o,
        Err(e) => {
            tracing::debug!(sender = %sender.handle, error = %e, "a datagram to a sender does not open");
            return Ok(None);
        }
    };
    let changes = device.take_changes();
    let upserted: Vec<_> = changes
        .sessions_upserted
        .iter()
        .filter_map(|id| {
            let s = device.session(id)?;
            let bytes = device.session_bytes(id)?;
            Some((id.0, s.peer(), phone.vault.seal(&ctx, &bytes)))
        })
        .collect();
    let removed: Vec<_> = changes.sessions_removed.iter().map(|id| id.0).collect();
    phone
        .db(move |s| s.save_sender_sessions(sid, upserted, removed))
        .await?;
    if opened.payload.content_type != sotto_proto::content::TEXT {
        return Ok(None);
    }
    let Some(body) = sotto_device::TextBody::decode(&opened.payload.body) else {
        return Ok(None);
    };
    // The claimed name must be the user whose key certified the device.
    let from = sotto_proto::normalize_username(&body.sender);
    let hash = sotto_proto::username_hash(&from);
    let owner = state.db(move |s| s.user(&hash)).await?;
    if owner.map(|u| u.user) != Some(opened.sender.user) {
        tracing::warn!(sender = %sender.handle, "a reply whose claimed name is not its sender's: dropped");
        return Ok(None);
    }
    let user = opened.sender.user;
    let thread = phone.db(move |s| s.thread(sid, &user)).await?;
    Ok(Some(webhook::reply_event(
        &from,
        thread.as_deref(),
        &body.text,
    )))
}
