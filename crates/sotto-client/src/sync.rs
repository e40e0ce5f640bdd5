//! Receiving: fetching the mailbox, opening and classifying each datagram,
//! committing what it changes, then acknowledging it.

use reqwest::Method;
use sotto_api::{b64, Ack, MailboxBatch, MailboxItem};
use sotto_proto::{check_contact_key, content, ContactKey, UserPublic};
use sotto_store::client::{normalize, StoredMessage};

use crate::contacts::contact_record;
use crate::net::NO_BODY;
use crate::{
    check_username, conversation_id, Client, Error, LinkSyncBody, Result, SyncReport, TextBody,
    ROOM_NAMES,
};

/// Mailbox items fetched per request.
const MAILBOX_PAGE: u32 = 100;

/// The result of processing one mailbox item.
pub(crate) enum Outcome {
    New(crate::Message),
    Duplicate,
    Blocked,
    Rejected(String),
    LinkSync,
    /// Room lines (notices, messages) to show.
    Room(Vec<String>),
    Ignored,
}

impl SyncReport {
    fn add(&mut self, o: Outcome) {
        match o {
            Outcome::New(m) => self.messages.push(m),
            Outcome::Duplicate => self.duplicates += 1,
            Outcome::Blocked => self.blocked += 1,
            Outcome::Rejected(r) => self.rejected.push(r),
            Outcome::LinkSync => self.link_syncs += 1,
            Outcome::Room(lines) => self.room_lines.extend(lines),
            Outcome::Ignored => {}
        }
    }
}

impl Client {
    /// Fetches everything waiting in this device's mailbox, opens and
    /// stores it, acknowledges it, then refills prekeys if the server pool
    /// is low.
    pub async fn sync(&mut self) -> Result<SyncReport> {
        let _guard = self.begin().await?;
        self.rooms.cache_on(true);
        let r = self.sync_mailbox().await;
        self.rooms.cache_on(false);
        let mut report = r?;
        self.room_flush(&mut report).await?;
        self.purge_rooms()?;
        self.refill_prekeys_if_low().await?;
        Ok(report)
    }

    /// Fetches, processes and acknowledges every waiting mailbox item.
    async fn sync_mailbox(&mut self) -> Result<SyncReport> {
        let mut report = SyncReport::default();
        let mut after = 0u64;
        loop {
            let path = format!("/v1/mailbox?after={after}&limit={MAILBOX_PAGE}");
            let batch: MailboxBatch = self
                .api
                .call(Method::GET, &path, NO_BODY, Some(self.device.key()))
                .await?;
            if batch.items.is_empty() {
                break;
            }
            self.receive(&batch.items, &mut report).await?;
            after = batch.items.iter().map(|i| i.seq).fold(after, u64::max);
            if !batch.more {
                break;
            }
        }
        Ok(report)
    }

    /// Processes `items` in order into `report`, then acknowledges them:
    /// every item is committed before any is acknowledged. The caller holds
    /// the home lock.
    pub(crate) async fn receive(
        &mut self,
        items: &[MailboxItem],
        report: &mut SyncReport,
    ) -> Result<()> {
        let mut seqs = Vec::with_capacity(items.len());
        for item in items {
            let outcome = self.process(item).await?;
            report.add(outcome);
            seqs.push(item.seq);
        }
        self.ack(seqs).await
    }

    async fn ack(&self, seqs: Vec<u64>) -> Result<()> {
        if seqs.is_empty() || self.skip_ack {
            return Ok(());
        }
        let _: serde_json::Value = self
            .api
            .call(
                Method::POST,
                "/v1/mailbox/ack",
                Some(&Ack { seqs }),
                Some(self.device.key()),
            )
            .await?;
        Ok(())
    }

    /// Test hook: simulate a device that dies after committing received
    /// messages but before acknowledging them.
    #[doc(hidden)]
    pub fn set_skip_ack(&mut self, skip: bool) {
        self.skip_ack = skip;
    }

    /// Opens one mailbox item and commits what it changes. An `Err` means
    /// nothing was committed (and the in-memory state was rolled back): the
    /// item must not be acknowledged.
    async fn process(&mut self, item: &MailboxItem) -> Result<Outcome> {
        let Some(bytes) = b64::decode(&item.datagram) else {
            return Ok(Outcome::Rejected(format!(
                "mailbox item {} is not base64",
                item.seq
            )));
        };
        let opened = match self.device.open(&bytes) {
            Ok(o) => o,
            Err(sotto_proto::Error::Replay) => return Ok(Outcome::Duplicate),
            Err(e) => {
                return Ok(Outcome::Rejected(format!(
                    "a message could not be opened: {e}"
                )))
            }
        };
        match self.classify(&opened, item).await {
            Ok((outcome, message, link_sync)) => {
                let changes = self.device.take_changes();
                let mut new_contacts = Vec::new();
                if let Some(sync) = &link_sync {
                    for c in &sync.contacts {
                        if check_username(&c.username).is_ok()
                            && self.store.contact(&c.username)?.is_none()
                        {
                            new_contacts.push(c.clone());
                        }
                    }
                }
                let r = (|| -> Result<Outcome> {
                    let tx = self.store.transaction()?;
                    tx.apply_device_changes(&self.device, &changes)?;
                    let mut outcome = outcome;
                    if let Some(m) = &message {
                        if !tx.insert_message(m)? {
                            outcome = Outcome::Duplicate;
                        }
                    }
                    if let Some(sync) = &link_sync {
                        if self.username.is_empty() {
                            tx.set_username(&sync.username)?;
                        }
                        for c in &new_contacts {
                            tx.put_contact(&contact_record(
                                &c.username,
                                &c.user_key,
                                c.verified,
                                &[],
                            ))?;
                        }
                    }
                    tx.set_cursor(item.seq)?;
                    tx.commit()?;
                    Ok(outcome)
                })();
                match r {
                    Ok(outcome) => {
                        if let Some(sync) = link_sync {
                            if self.username.is_empty() {
                                self.username = sync.username.clone();
                            }
                            for b in &sync.blocked {
                                self.store.block(b)?;
                            }
                        }
                        Ok(outcome)
                    }
                    Err(e) => {
                        self.reload_device()?;
                        Err(e)
                    }
                }
            }
            Err(e) => {
                // Network trouble while checking the sender: roll back so
                // the datagram opens again next time.
                self.reload_device()?;
                Err(e)
            }
        }
    }

    /// Decides what an opened datagram is. `Err` only for failures that
    /// should stop the sync (network); refusals are `Outcome::Rejected`.
    async fn classify(
        &mut self,
        opened: &sotto_proto::Opened,
        item: &MailboxItem,
    ) -> Result<(Outcome, Option<StoredMessage>, Option<LinkSyncBody>)> {
        let own_user = self.device.cert().user;
        let sender_user = opened.sender.user;
        let p = &opened.payload;
        match p.content_type {
            content::TEXT => {
                let Some(body) = TextBody::decode(&p.body) else {
                    return Ok((
                        Outcome::Rejected("a message has an unreadable body".into()),
                        None,
                        None,
                    ));
                };
                let (from, to) = (normalize(&body.sender), normalize(&body.recipient));
                let outgoing = sender_user == own_user;
                let conversation = if outgoing {
                    if !self.username.is_empty() && from != self.username {
                        return Ok((
                            Outcome::Rejected(format!(
                                "a message from one of your devices claims to be from {from:?}"
                            )),
                            None,
                            None,
                        ));
                    }
                    match self.store.contact(&to)? {
                        Some(c) => conversation_id(&own_user, &UserPublic(c.user_key)),
                        None => p.conversation,
                    }
                } else {
                    if self.store.is_blocked(&from)? {
                        return Ok((Outcome::Blocked, None, None));
                    }
                    if !self.username.is_empty() && to != self.username {
                        return Ok((
                            Outcome::Rejected(format!(
                                "a message from {from:?} was addressed to {to:?}, not you"
                            )),
                            None,
                            None,
                        ));
                    }
                    if let Some(reason) = self.check_sender(&from, &sender_user).await? {
                        return Ok((Outcome::Rejected(reason), None, None));
                    }
                    conversation_id(&own_user, &sender_user)
                };
                let m = StoredMessage {
                    id: p.message_id,
                    conversation,
                    from,
                    to,
                    sent_at: p.sent_at,
                    received_at: item.received_at,
                    body: body.text,
                    ttl: p.ttl,
                    outgoing,
                };
                Ok((Outcome::New(m.clone().into()), Some(m), None))
            }
            content::LINK_SYNC => {
                if sender_user != own_user {
                    return Ok((
                        Outcome::Rejected("link data from another user was refused".into()),
                        None,
                        None,
                    ));
                }
                match LinkSyncBody::decode(&p.body) {
                    Some(s) if check_username(&s.username).is_ok() => {
                        Ok((Outcome::LinkSync, None, Some(s)))
                    }
                    _ => Ok((Outcome::Rejected("unreadable link data".into()), None, None)),
                }
            }
            content::ROOM_CONTROL => Ok((self.room_receive(opened, item)?, None, None)),
            ROOM_NAMES => Ok((self.room_names_receive(opened)?, None, None)),
            _ => Ok((Outcome::Ignored, None, None)),
        }
    }

    /// Checks that `claimed` is the name of the user whose key certified
    /// the sending device. `Some(reason)` refuses the message.
    async fn check_sender(&mut self, claimed: &str, user: &UserPublic) -> Result<Option<String>> {
        if let Some(c) = self.store.contact(claimed)? {
            return Ok(match check_contact_key(Some(&UserPublic(c.user_key)), user) {
                ContactKey::Unchanged => None,
                _ => Some(format!(
                    "a message claiming to be from {claimed} is signed by a key other than {claimed}'s known key; \
                     compare safety numbers with `sotto verify {claimed}`"
                )),
            });
        }
        let (server_user, certs) = match self.fetch_user(claimed).await {
            Ok(r) => r,
            Err(Error::UnknownUser(_)) => {
                return Ok(Some(format!(
                    "a message claims to be from {claimed:?}, who is not registered"
                )))
            }
            Err(e) => return Err(e),
        };
        if server_user != *user {
            return Ok(Some(format!(
                "a message claims to be from {claimed}, but is not signed by {claimed}'s key"
            )));
        }
        self.store
            .put_contact(&contact_record(claimed, user, false, &certs))?;
        Ok(None)
    }
}
