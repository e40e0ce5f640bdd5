//! Every path of the API, in one place: the route templates the server is
//! built from (axum 0.8 syntax, `{param}`, as in OpenAPI), and the
//! functions that fill them in for the client and the load generator. A
//! test checks that each function fills the template it belongs to, so the
//! two cannot drift apart.

pub const CLOCK: &str = "/v1/clock";
pub const REGISTER: &str = "/v1/register";
pub const USER: &str = "/v1/users/{username_hash}";
pub const DEVICES: &str = "/v1/devices";
pub const DEVICE: &str = "/v1/devices/{device_id}";
pub const BUNDLES: &str = "/v1/users/{username_hash}/bundles";
pub const PREKEYS: &str = "/v1/prekeys";
pub const MESSAGES: &str = "/v1/messages";
pub const MAILBOX: &str = "/v1/mailbox";
pub const MAILBOX_ACK: &str = "/v1/mailbox/ack";
pub const DATAGRAM: &str = "/v1/datagrams/{datagram_id}";
pub const WS: &str = "/v1/ws";
pub const LINK: &str = "/v1/link";
pub const LINK_READ: &str = "/v1/link/{link_id}";
pub const LINK_APPROVE: &str = "/v1/link/{link_id}/approve";
pub const LINK_STATUS: &str = "/v1/link/{link_id}/status";
pub const BLOCKS: &str = "/v1/blocks";
pub const BLOCK: &str = "/v1/blocks/{username_hash}";
pub const SENDER_MESSAGES: &str = "/v1/sender/messages";
pub const SENDER_MESSAGE: &str = "/v1/sender/messages/{id}";
pub const PHONE_REGISTER: &str = "/v1/phone/register";
pub const PHONE_VERIFY: &str = "/v1/phone/verify";
pub const SMS_INBOUND: &str = "/v1/sms/inbound";
pub const OPENAPI: &str = crate::OPENAPI_PATH;
/// The node's metrics (Prometheus text), unauthenticated.
pub const METRICS: &str = "/metrics";

/// Every route, for the server's check that each is documented.
pub const ALL: &[&str] = &[
    CLOCK,
    REGISTER,
    USER,
    DEVICES,
    DEVICE,
    BUNDLES,
    PREKEYS,
    MESSAGES,
    MAILBOX,
    MAILBOX_ACK,
    DATAGRAM,
    WS,
    LINK,
    LINK_READ,
    LINK_APPROVE,
    LINK_STATUS,
    BLOCKS,
    BLOCK,
    SENDER_MESSAGES,
    SENDER_MESSAGE,
    PHONE_REGISTER,
    PHONE_VERIFY,
    SMS_INBOUND,
    OPENAPI,
    METRICS,
];

/// Replaces the one `{param}` segment of `template` with `value`.
fn fill(template: &str, value: &str) -> String {
    template
        .split('/')
        .map(|seg| if seg.starts_with('{') { value } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

/// [`USER`] for a username hash.
pub fn user(username_hash: &[u8; 32]) -> String {
    fill(USER, &hex::encode(username_hash))
}

/// [`DEVICE`] for a device id.
pub fn device(device: &[u8; 32]) -> String {
    fill(DEVICE, &hex::encode(device))
}

/// [`BUNDLES`] for a username hash.
pub fn bundles(username_hash: &[u8; 32]) -> String {
    fill(BUNDLES, &hex::encode(username_hash))
}

/// [`SENDER_MESSAGE`] for a message id.
pub fn sender_message(id: &str) -> String {
    fill(SENDER_MESSAGE, id)
}

/// [`DATAGRAM`] for a datagram id.
pub fn datagram(datagram_id: &[u8; 32]) -> String {
    fill(DATAGRAM, &hex::encode(datagram_id))
}

/// [`MAILBOX`] with its query: the items after `after`, at most `limit`.
pub fn mailbox(after: u64, limit: u32) -> String {
    format!("{MAILBOX}?after={after}&limit={limit}")
}

/// [`LINK_READ`] for a link id.
pub fn link(link_id: &str) -> String {
    fill(LINK_READ, link_id)
}

/// [`LINK_APPROVE`] for a link id.
pub fn link_approve(link_id: &str) -> String {
    fill(LINK_APPROVE, link_id)
}

/// [`LINK_STATUS`] for a link id.
pub fn link_status(link_id: &str) -> String {
    fill(LINK_STATUS, link_id)
}

/// [`BLOCK`] for a username hash.
pub fn block(username_hash: &[u8; 32]) -> String {
    fill(BLOCK, &hex::encode(username_hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// True when `path` is `template` with its parameter filled in.
    fn fills(template: &str, path: &str) -> bool {
        let (t, p): (Vec<&str>, Vec<&str>) =
            (template.split('/').collect(), path.split('/').collect());
        t.len() == p.len()
            && t.iter()
                .zip(&p)
                .all(|(t, p)| t == p || (t.starts_with('{') && !p.is_empty()))
    }

    #[test]
    fn builders_fill_their_templates() {
        let h = [0xab; 32];
        for (template, path) in [
            (USER, user(&h)),
            (DEVICE, device(&h)),
            (BUNDLES, bundles(&h)),
            (DATAGRAM, datagram(&h)),
            (LINK_READ, link("abc")),
            (LINK_APPROVE, link_approve("abc")),
            (LINK_STATUS, link_status("abc")),
            (BLOCK, block(&h)),
        ] {
            assert!(fills(template, &path), "{path} does not fill {template}");
            assert!(ALL.contains(&template));
        }
        assert_eq!(user(&h), format!("/v1/users/{}", "ab".repeat(32)));
        assert_eq!(mailbox(7, 100), "/v1/mailbox?after=7&limit=100");
        assert!(!fills(USER, &bundles(&h)));
    }
}
