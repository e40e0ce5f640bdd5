//! Receiving: fetching the mailbox page by page, handing each datagram to
//! the device core, carrying out what it asks (sender checks, and the
//! acknowledgements it queues once each datagram is committed), then the
//! room work and the prekey refill.

use reqwest::Method;
use sotto_api::{b64, paths, MailboxBatch, MailboxItem};
use sotto_device::{DeliveryTag, Incoming, SyncReport};

use crate::net::{local_ms, NO_BODY};
use crate::{Client, Result};

/// Mailbox items fetched per request.
const MAILBOX_PAGE: u32 = 100;

impl Client {
    /// Fetches everything waiting in this device's mailbox, opens and
    /// stores it, acknowledges it, then refills prekeys if the server pool
    /// is low.
    pub async fn sync(&mut self) -> Result<SyncReport> {
        let (_guard, _) = self.begin_online().await?;
        let mut after = 0u64;
        loop {
            let batch: MailboxBatch = self
                .api()?
                .call(
                    Method::GET,
                    &paths::mailbox(after, MAILBOX_PAGE),
                    NO_BODY,
                    Some(self.core.device().key()),
                )
                .await?;
            if batch.items.is_empty() {
                break;
            }
            self.receive(&batch.items).await?;
            after = batch.items.iter().map(|i| i.seq).fold(after, u64::max);
            if !batch.more {
                break;
            }
        }
        self.core.flush(local_ms())?;
        self.drain().await?;
        let op = self.core.refill_prekeys_if_low(local_ms());
        self.run(op).await?;
        Ok(self.report())
    }

    /// Hands `items` to the core in order and carries out what that asks
    /// (each item is acknowledged once committed). The caller holds the
    /// home lock.
    pub(crate) async fn receive(&mut self, items: &[MailboxItem]) -> Result<()> {
        for item in items {
            // Not base64: handed over as it is, the core refuses it.
            let bytes = b64::decode(&item.datagram).unwrap_or_default();
            self.core.receive(
                local_ms(),
                Incoming {
                    tag: DeliveryTag(item.seq),
                    datagram: &bytes,
                    received_at: item.received_at,
                },
            )?;
        }
        self.drain().await
    }

    /// The events the core reported since the last report.
    pub(crate) fn report(&mut self) -> SyncReport {
        let mut report = SyncReport::default();
        while let Some(e) = self.core.poll_event() {
            report.add(e);
        }
        report
    }
}
