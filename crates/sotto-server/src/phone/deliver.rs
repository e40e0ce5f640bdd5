//! A sender's message on its way: sealed at once to a registered number's
//! devices, or held (sealed under the hold key) until the number
//! registers, then sealed to its devices and the held copy erased.

use rand_core::{OsRng, RngCore};
use sotto_api::phone::{
    SenderMessage, SenderMessageCreated, DEFAULT_HOLD_TTL_S, MAX_HOLD_TTL_S, MAX_SENDER_BODY,
};
use sotto_api::{b64, MailboxItem, Push};
use sotto_proto::Session;
use std::collections::HashMap;

use sotto_store::server::phone::{
    HeldMessage, HeldSend, NewHeld, PhoneUser, SenderRecord, CLAIM_LEASE_MS,
};
use sotto_store::server::Enqueued;
use zeroize::Zeroizing;

use super::{agent, context, Phone};
use crate::api::ApiError;
use crate::state::{now_ms, AppState};

/// Checks a sender's request: the number, the body, the TTL.
pub(crate) fn check(req: &SenderMessage) -> Result<u64, ApiError> {
    if !sotto_api::phone::is_e164(&req.to) {
        return Err(ApiError::bad_request(
            "\"to\" must be an E.164 number: + and 8 to 15 digits, e.g. +15551234567",
        ));
    }
    if req.body.is_empty() {
        return Err(ApiError::bad_request("\"body\" is empty"));
    }
    if req.body.len() > MAX_SENDER_BODY {
        return Err(ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            sotto_api::codes::TOO_LARGE,
            format!("\"body\" is longer than {MAX_SENDER_BODY} bytes"),
        ));
    }
    let ttl = req.ttl.unwrap_or(DEFAULT_HOLD_TTL_S);
    if ttl == 0 || ttl > MAX_HOLD_TTL_S {
        return Err(ApiError::bad_request(format!(
            "\"ttl\" must be 1 to {MAX_HOLD_TTL_S} seconds"
        )));
    }
    Ok(ttl)
}

fn new_id() -> String {
    let mut id = [0u8; 16];
    OsRng.fill_bytes(&mut id);
    hex::encode(id)
}

/// The sealed form of a held message: the number and the body.
fn held_plaintext(number: &str, body: &str) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(1 + number.len() + body.len()));
    out.push(number.len() as u8);
    out.extend_from_slice(number.as_bytes());
    out.extend_from_slice(body.as_bytes());
    out
}

fn held_parts(plain: &[u8]) -> Option<(&str, &str)> {
    let n = *plain.first()? as usize;
    let number = std::str::from_utf8(plain.get(1..1 + n)?).ok()?;
    let body = std::str::from_utf8(plain.get(1 + n..)?).ok()?;
    Some((number, body))
}

/// `POST /v1/sender/messages` once the key and body are checked.
pub(crate) async fn send(
    state: &AppState,
    phone: &Phone,
    sender: &SenderRecord,
    req: SenderMessage,
    ttl_s: u64,
) -> Result<SenderMessageCreated, ApiError> {
    let id = new_id();
    let number = req.to.clone();
    let users = phone.db(move |s| s.phone_users(&number)).await?;
    if !users.is_empty() {
        let (digest, recipients) = seal_to(state, phone, sender, &users, &req.body, &id).await?;
        let (mid, sid) = (id.clone(), sender.id);
        phone
            .db(move |s| s.record_sent(&mid, sid, &digest, recipients, now_ms()))
            .await?;
        tracing::info!(sender = %sender.handle, id = %id, "sender message sealed to a registered number");
        return Ok(SenderMessageCreated {
            id,
            status: "sent".into(),
        });
    }
    let now = now_ms();
    let held = NewHeld {
        id: id.clone(),
        sender_id: sender.id,
        number: req.to.clone(),
        sealed: phone
            .vault
            .seal(&context("held", &id), &held_plaintext(&req.to, &req.body)),
        expires_at: now.saturating_add(ttl_s.saturating_mul(1000)),
    };
    let first = phone.db(move |s| s.hold(held, now)).await?;
    if first {
        let text = format!(
            "{} sent you a secure message. Install sotto and run: sotto register-phone {} --server {}",
            sender.name, req.to, phone.public_url
        );
        phone.queue_sms(&req.to, &text).await?;
    }
    tracing::info!(sender = %sender.handle, id = %id, invite = first, "sender message held for an unregistered number");
    Ok(SenderMessageCreated {
        id,
        status: "held".into(),
    })
}

/// What sealing a text to a number's users made: one datagram per user
/// reached, and the sender's lock, held until the datagrams are stored
/// (so they reach each device in the order their sessions advanced).
pub(crate) struct Sealed {
    pub datagrams: Vec<(Vec<sotto_proto::DeviceId>, Vec<u8>)>,
    pub reached: Vec<sotto_proto::UserPublic>,
    lock: super::SenderGuard,
}

/// Seals `text` from `sender` to every device of `users` (one datagram
/// per user) and saves the sender's sessions; stores nothing else.
async fn seal(
    phone: &Phone,
    sender: &SenderRecord,
    users: &[PhoneUser],
    text: &str,
    message_id: &str,
) -> Result<Sealed, ApiError> {
    let locked = phone.lock_sender(sender.id).await?;
    let secrets = phone.secrets(sender)?;
    let sid = sender.id;
    let claimant = sender.user;
    let mut datagrams = Vec::new();
    let mut reached = Vec::new();
    for user in users {
        let target = user.user;
        let claimed = phone
            .db(move |s| s.claim_for_user(&target, &claimant))
            .await?;
        if claimed.is_empty() {
            continue;
        }
        let peers: Vec<_> = claimed.iter().map(|c| c.device).collect();
        let sealed = phone.db(move |s| s.sender_sessions(sid, &peers)).await?;
        let mut sessions = Vec::new();
        for blob in sealed {
            if let Ok(plain) = phone
                .vault
                .open(&context("session", &sid.to_string()), &blob)
            {
                if let Ok(s) = Session::from_bytes(&plain) {
                    sessions.push(s);
                }
            }
        }
        let mut device = agent::device(&secrets, &sender.cert, sessions)
            .ok_or_else(|| ApiError::internal("sender device unusable"))?;
        let payload = agent::text_payload(
            payload_id(message_id),
            &sender.user,
            &sender.handle,
            &user.user,
            &user.username,
            text,
            now_ms(),
        );
        let (datagram, to) = agent::seal(&mut OsRng, &mut device, &user.user, &claimed, &payload)
            .map_err(|e| {
            tracing::warn!(error = %e, "sealing a sender message failed");
            ApiError::internal("sealing failed")
        })?;
        let changes = device.take_changes();
        let upserted: Vec<_> = changes
            .sessions_upserted
            .iter()
            .filter_map(|id| {
                let s = device.session(id)?;
                let bytes = device.session_bytes(id)?;
                Some((
                    id.0,
                    s.peer(),
                    phone
                        .vault
                        .seal(&context("session", &sid.to_string()), &bytes),
                ))
            })
            .collect();
        let removed: Vec<_> = changes.sessions_removed.iter().map(|id| id.0).collect();
        phone
            .db(move |s| s.save_sender_sessions(sid, upserted, removed))
            .await?;
        datagrams.push((to, datagram));
        reached.push(user.user);
    }
    if datagrams.is_empty() {
        return Err(ApiError::internal("the number has no device to deliver to"));
    }
    Ok(Sealed {
        datagrams,
        reached,
        lock: locked,
    })
}

/// Seals `text` from `sender` to every device of `users` (one datagram
/// per user), stores each in the devices' mailboxes and pushes it.
/// Returns the first datagram's id and device count (what the status
/// follows).
pub(crate) async fn seal_to(
    state: &AppState,
    phone: &Phone,
    sender: &SenderRecord,
    users: &[PhoneUser],
    text: &str,
    message_id: &str,
) -> Result<([u8; 32], u32), ApiError> {
    let sealed = seal(phone, sender, users, text, message_id).await?;
    let mut first: Option<([u8; 32], u32)> = None;
    for (to, datagram) in sealed.datagrams.iter().cloned() {
        let count = to.len() as u32;
        let digest = enqueue(state, sender, to, datagram).await?;
        first.get_or_insert((digest, count));
    }
    let (sid, mid, reached) = (sender.id, message_id.to_owned(), sealed.reached.clone());
    phone
        .db(move |s| s.note_thread(sid, &reached, &mid))
        .await?;
    first.ok_or_else(|| ApiError::internal("the number has no device to deliver to"))
}

/// The payload message id of a sender message (its id is 16 random bytes
/// in hex; anything else is hashed).
fn payload_id(message_id: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    if hex::decode_to_slice(message_id, &mut out).is_err() {
        use sha2::Digest;
        out.copy_from_slice(&sha2::Sha256::digest(message_id.as_bytes())[..16]);
    }
    out
}

/// Stores a datagram from the sender's device and pushes it.
async fn enqueue(
    state: &AppState,
    sender: &SenderRecord,
    to: Vec<sotto_proto::DeviceId>,
    datagram: Vec<u8>,
) -> Result<[u8; 32], ApiError> {
    let (device, quota) = (sender.device, state.limits.quota());
    let body = datagram.clone();
    let enqueued = state
        .db(move |s| s.enqueue(&device, &to, datagram, now_ms(), &quota))
        .await?;
    push(state, &enqueued, &body);
    Ok(enqueued.datagram_id)
}

/// Pushes a stored datagram to its devices' sockets.
fn push(state: &AppState, enqueued: &Enqueued, body: &[u8]) {
    let encoded = b64::encode(body);
    for d in &enqueued.deliveries {
        state.hub.push(&d.device, || {
            Push::Message(MailboxItem {
                seq: d.seq,
                datagram: encoded.clone(),
                received_at: enqueued.received_at,
            })
        });
    }
}

/// A random claim owner: what names one delivery of held messages.
pub(crate) fn new_owner() -> [u8; 16] {
    let mut owner = [0u8; 16];
    OsRng.fill_bytes(&mut owner);
    owner
}

/// The number registered: every message held for it is claimed, sealed
/// to its devices, enqueued and its held copy (and key) erased. Runs as a
/// task of its own: a client hanging up does not stop it halfway. Returns
/// how many were delivered; those that failed are held again (the
/// background job retries them).
pub(crate) async fn deliver_held(state: &AppState, number: &str) -> Result<u32, ApiError> {
    let (state, number) = (state.clone(), number.to_owned());
    let task = tokio::spawn(async move {
        let phone = state.phone.clone();
        // Each held message is claimed by one delivery: two devices
        // verifying at once, on one node or two, never both seal it.
        let owner = new_owner();
        let held = phone
            .db(move |s| s.claim_held(&number, &owner, now_ms(), CLAIM_LEASE_MS))
            .await?;
        Ok(deliver_claimed(&state, &phone, &owner, held).await)
    });
    task.await
        .map_err(|_| ApiError::internal("the delivery of held messages failed"))?
}

/// Delivers messages claimed by `owner`; those that fail are released
/// (held again). Returns how many were delivered.
pub(crate) async fn deliver_claimed(
    state: &AppState,
    phone: &Phone,
    owner: &[u8; 16],
    held: Vec<HeldMessage>,
) -> u32 {
    let mut users_of: HashMap<String, Vec<PhoneUser>> = HashMap::new();
    let (mut delivered, mut failed) = (0, Vec::new());
    for h in held {
        match deliver_one(state, phone, owner, &h, &mut users_of).await {
            Ok(true) => delivered += 1,
            // Another delivery took it over (this one was too slow).
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(id = %h.id, error = %e.message, "a held message was not delivered; it stays held");
                failed.push(h.id);
            }
        }
    }
    if !failed.is_empty() {
        let owner = *owner;
        if let Err(e) = phone
            .db(move |s| s.release_held(&failed, &owner, now_ms()))
            .await
        {
            // Its claim runs out and the background job takes it then.
            tracing::warn!(error = %e.message, "releasing held messages failed");
        }
    }
    delivered
}

/// Seals one claimed message and stores it with its claim checked, in one
/// store call. Ok(false): the claim was taken over (nothing stored).
async fn deliver_one(
    state: &AppState,
    phone: &Phone,
    owner: &[u8; 16],
    h: &HeldMessage,
    users_of: &mut HashMap<String, Vec<PhoneUser>>,
) -> Result<bool, ApiError> {
    let sid = h.sender_id;
    let sender = phone
        .db(move |s| s.sender_by_id(sid))
        .await?
        .ok_or_else(|| ApiError::internal("the sender of a held message is gone"))?;
    let plain = phone
        .vault
        .open(&context("held", &h.id), &h.sealed)
        .map_err(|e| {
            tracing::error!(id = %h.id, error = %e, "a held message does not open");
            ApiError::internal("a held message does not open")
        })?;
    let (number, body) =
        held_parts(&plain).ok_or_else(|| ApiError::internal("a held message is malformed"))?;
    if !users_of.contains_key(number) {
        let n = number.to_owned();
        let users = phone.db(move |s| s.phone_users(&n)).await?;
        users_of.insert(number.to_owned(), users);
    }
    let users = &users_of[number];
    let sealed = seal(phone, &sender, users, body, &h.id).await?;
    let send = HeldSend {
        id: h.id.clone(),
        claim: *owner,
        from: sender.device,
        datagrams: sealed.datagrams.clone(),
        quota: state.limits.quota(),
        now_ms: now_ms(),
    };
    let Some(enqueued) = phone.db(move |s| s.send_held(send)).await? else {
        tracing::info!(id = %h.id, "a held message was delivered by another claim");
        return Ok(false);
    };
    for (e, (_, body)) in enqueued.iter().zip(&sealed.datagrams) {
        push(state, e, body);
    }
    drop(sealed.lock);
    let (mid, reached) = (h.id.clone(), sealed.reached);
    phone
        .db(move |s| s.note_thread(sid, &reached, &mid))
        .await?;
    let event = super::webhook::status_event(&h.id, "sent");
    phone.queue_webhook(sender.id, event).await?;
    Ok(true)
}
