//! Webhook events and their signature. Every post carries
//! `X-Sotto-Event: <event id>` (a retry repeats it) and
//! `X-Sotto-Signature: t=<unix seconds>,v1=<hex HMAC-SHA-256(webhook
//! secret, "<t>." || body)>`; the sender checks the HMAC in constant time
//! and refuses an old `t` (docs/api.md, "Webhook").

use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use sha2::Sha256;

use crate::state::now_ms;

pub const EVENT_HEADER: &str = "x-sotto-event";
pub const SIGNATURE_HEADER: &str = "x-sotto-signature";

fn event_id() -> String {
    let mut id = [0u8; 16];
    OsRng.fill_bytes(&mut id);
    hex::encode(id)
}

/// A message changed status.
pub(crate) fn status_event(message_id: &str, status: &str) -> serde_json::Value {
    serde_json::json!({
        "id": event_id(),
        "type": "status",
        "message": message_id,
        "status": status,
        "at": now_ms(),
    })
}

/// A reply from a registered number's user.
pub(crate) fn reply_event(from: &str, in_reply_to: Option<&str>, text: &str) -> serde_json::Value {
    serde_json::json!({
        "id": event_id(),
        "type": "reply",
        "from": from,
        "in_reply_to": in_reply_to,
        "text": text,
        "at": now_ms(),
    })
}

/// The `X-Sotto-Signature` value for `body` at `t` (Unix seconds).
pub fn signature(secret: &[u8], t: u64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}
