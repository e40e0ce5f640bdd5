//! Sends and relaxed acknowledgements in groups: one call of
//! `sotto_send_many` or `sotto_ack_many` (schema version 6, `v6.sql`) for
//! every send or ack that arrived while the node's earlier groups were in
//! the database. PostgreSQL spends its time per statement, not per row
//! (planning and starting each of the ten statements of a `sotto_send`),
//! so a group's statements cost far less than its sends' did one by one
//! (a third of the database's CPU a message in the benchmark of
//! docs/PERFORMANCE.md); each group is also one commit, one WAL flush.
//!
//! Nothing changes for the caller: a send is answered once its group has
//! committed, with what `sotto_send` alone would have answered. A send the
//! group cannot take (a refusal to name, a request id seen before, a resent
//! datagram...) is named by the database (`SO006`), which rolls the group
//! back; those sends go alone and the rest again as a group (a few times,
//! then all alone). Sends naming a device the node could not find go alone
//! without trying. So a stranger who sends what is refused costs the
//! group he lands in a call or two more, and changes no answer.
//!
//! A group that fails otherwise is rolled back too and its members go
//! alone, unless the failure leaves its commit in doubt (the connection
//! lost during the call): then every member is answered with the error,
//! as a lone send would be, and never stored twice.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use futures_util::StreamExt;

use tokio::sync::{mpsc, Semaphore};

use super::mailbox::{self, Outgoing};
use super::{int, Commit, Flight, Inner};
use crate::server::*;

/// Most sends in one group.
const MOST_SENDS: usize = 256;
/// Most datagram bytes in one group (its parameters travel in one
/// message to the database).
const MOST_BYTES: usize = 4 << 20;
/// Most recipients in one group: its transaction locks them all until it
/// commits (a send naming more goes in a group of its own).
const MOST_RECIPIENTS: usize = 4_096;
/// Calls of one group, each without the sends the last one named (every
/// check names all it finds: one call for each kind of check at most).
const TRIES: usize = 8;
/// Most sends or acks of a group that run alone at once (a declined
/// group's members must not take every pooled connection).
const ALONE: usize = 4;
/// Most acks in one group (each of another device).
const MOST_ACKS: usize = 256;
/// Groups of sends one node has in the database at once, each on its own
/// pooled connection. While all are busy the queue grows, and the next
/// group takes all of it: the busier the node, the larger its groups.
/// Groups naming the same recipients wait for each other's row locks
/// anyway, so more slots only cut the same sends into smaller groups, each
/// with its own commit: with two nodes on one database, 2 slots a node
/// delivered more than 4 in each of five alternating pairs (one node: the
/// same within the noise; docs/PERFORMANCE.md, "Sends and acks in groups
/// on PostgreSQL").
const SEND_GROUPS: usize = 2;
/// Groups of acks one node has in the database at once (an ack group holds
/// only device locks, and for a short time: it does not wait for the WAL
/// flush).
const ACK_GROUPS: usize = 4;

/// One send waiting for its group.
pub(super) struct SendJob {
    pub send: Sending,
    pub caller: Caller<Enqueued>,
}

/// What is stored of a send.
#[derive(Clone)]
pub(super) struct Sending {
    pub outgoing: Arc<Outgoing>,
    pub request: Option<RequestId>,
}

/// One relaxed acknowledgement waiting for its group.
pub(super) struct AckJob {
    pub ack: Ack,
    pub caller: Caller<u32>,
}

/// What is stored of an ack.
#[derive(Clone)]
pub(super) struct Ack {
    pub device: DeviceId,
    pub seqs: Arc<Vec<i64>>,
    pub now: u64,
    pub retain: bool,
}

/// Who waits for a job's answer (kept apart from what the group's tasks
/// read: a reply is `Send` only).
pub(super) struct Caller<T> {
    pub reply: Reply<T>,
    pub flight: Flight,
}

impl<T> Caller<T> {
    /// Answers; a reply that panics does not keep the rest of its group
    /// unanswered.
    fn answer(self, answer: Result<T>) {
        let reply = self.reply;
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || reply(answer))).is_err() {
            tracing::error!("a store reply panicked");
        }
        drop(self.flight);
    }
}

/// Why a group call stored nothing.
enum Declined {
    /// These sends (indices in the group) must go alone; call again
    /// without them.
    Sends(Vec<usize>),
    /// Rolled back: every member goes alone.
    Group(StoreError),
    /// Maybe committed, maybe not: every member is answered with this.
    Doubt(StoreError),
}

impl Declined {
    /// What a failed call means: rolled back for certain when the
    /// database answered with an error; in doubt when the connection
    /// failed under it.
    fn from_call(e: StoreError) -> Declined {
        let StoreError::Postgres(p) = &e else {
            return Declined::Doubt(e);
        };
        let Some(db) = p.as_db_error() else {
            return Declined::Doubt(e);
        };
        // A session ended by the server (FATAL: shut down, terminated,
        // lost) may have ended after its commit.
        let class = db.code().code().get(..2).unwrap_or_default();
        if matches!(db.severity(), "FATAL" | "PANIC") || matches!(class, "08" | "57" | "XX") {
            return Declined::Doubt(e);
        }
        if db.code().code() != "SO006" {
            return Declined::Group(e);
        }
        let named: Vec<usize> = db
            .detail()
            .unwrap_or_default()
            .split(',')
            .filter_map(|i| i.trim().parse::<usize>().ok())
            .filter_map(|i| i.checked_sub(1))
            .collect();
        if named.is_empty() {
            Declined::Group(e)
        } else {
            Declined::Sends(named)
        }
    }
}

/// The same error again, for each member of a group.
fn again(e: &StoreError) -> StoreError {
    match e {
        StoreError::Busy(m) => StoreError::Busy(m.clone()),
        StoreError::Postgres(p) => StoreError::Backend(super::reason(p)),
        other => StoreError::Backend(other.to_string()),
    }
}

/// Answers every caller with the same error (a group whose commit is in
/// doubt).
fn answer_all<T>(callers: impl IntoIterator<Item = Caller<T>>, e: &StoreError) {
    for caller in callers {
        caller.answer(Err(again(e)));
    }
}

/// Runs each job alone (`store`), [`ALONE`] at a time, and answers it.
async fn one_by_one<J, T, F>(jobs: impl IntoIterator<Item = (J, Caller<T>)>, store: impl Fn(J) -> F)
where
    F: std::future::Future<Output = Result<T>>,
{
    futures_util::stream::iter(jobs)
        .for_each_concurrent(ALONE, |(job, caller)| {
            let stored = store(job);
            async move { caller.answer(stored.await) }
        })
        .await;
}

/// The queues the store hands jobs to. Unbounded: what is queued is
/// bounded by the server, which holds a send or an ack in flight per
/// request or socket frame (`Limits` in sotto-server).
pub(super) struct Queues {
    pub sends: mpsc::UnboundedSender<SendJob>,
    pub acks: mpsc::UnboundedSender<AckJob>,
}

impl Queues {
    /// Starts the two gatherers on the store's runtime.
    pub fn start(rt: &tokio::runtime::Runtime, inner: &Arc<Inner>) -> Queues {
        let (sends, send_rx) = mpsc::unbounded_channel();
        let (acks, ack_rx) = mpsc::unbounded_channel();
        let (s, a) = (inner.clone(), inner.clone());
        rt.spawn(gather(
            send_rx,
            send_fits,
            MOST_SENDS,
            SEND_GROUPS,
            s,
            send_group,
        ));
        rt.spawn(gather(
            ack_rx, ack_fits, MOST_ACKS, ACK_GROUPS, a, ack_group,
        ));
        Queues { sends, acks }
    }
}

impl Inner {
    /// Counts one call that stored `n` writes (or tried to).
    fn stored(&self, n: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        self.writes.fetch_add(n as u64, Relaxed);
        self.calls.fetch_add(1, Relaxed);
    }

    /// Counts one group call that stored nothing.
    fn declined(&self) {
        self.declined
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

fn send_fits(group: &[SendJob], next: &SendJob) -> bool {
    let sum = |f: fn(&Outgoing) -> usize| -> usize {
        group.iter().map(|j| f(&j.send.outgoing)).sum::<usize>() + f(&next.send.outgoing)
    };
    group.len() < MOST_SENDS
        && sum(|o| o.datagram.len()) <= MOST_BYTES
        && sum(|o| o.recipients.len()) <= MOST_RECIPIENTS
}

fn ack_fits(group: &[AckJob], next: &AckJob) -> bool {
    group.len() < MOST_ACKS
        && group
            .iter()
            .all(|j| j.ack.device != next.ack.device && j.ack.retain == next.ack.retain)
}

/// Takes a free slot (of `groups`), waits for a job, adds what else is
/// queued while it fits, and runs the group (`run`) on a task of its own,
/// which gives the slot back when done. Jobs that do not fit
/// (an ack of a device already in the group, a send past the group's
/// bytes) are set aside, in order, for the next groups; the queue is
/// looked through at most two groups' worth at a time.
async fn gather<J, F>(
    mut rx: mpsc::UnboundedReceiver<J>,
    fits: fn(&[J], &J) -> bool,
    most: usize,
    groups: usize,
    inner: Arc<Inner>,
    run: fn(Arc<Inner>, Vec<J>) -> F,
) where
    J: Send + 'static,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(groups));
    let mut aside: VecDeque<J> = VecDeque::new();
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match aside.pop_front() {
            Some(j) => j,
            None => match rx.recv().await {
                Some(j) => j,
                None => return,
            },
        };
        let mut group = vec![first];
        let mut kept = VecDeque::new();
        let mut looked = 0;
        while looked < 2 * most {
            let Some(j) = aside.pop_front().or_else(|| rx.try_recv().ok()) else {
                break;
            };
            looked += 1;
            if fits(&group, &j) {
                group.push(j);
            } else {
                kept.push_back(j);
            }
        }
        kept.append(&mut aside);
        aside = kept;
        let running = run(inner.clone(), group);
        tokio::spawn(async move {
            running.await;
            drop(slot);
        });
    }
}

/// Stores a group of sends; what it declines goes alone.
async fn send_group(inner: Arc<Inner>, jobs: Vec<SendJob>) {
    let (mut sends, mut callers): (Vec<Sending>, Vec<Caller<Enqueued>>) =
        jobs.into_iter().map(|j| (j.send, j.caller)).unzip();
    let mut alone: Vec<(Sending, Caller<Enqueued>)> = Vec::new();
    let mut tries = 0;
    while sends.len() > 1 && tries < TRIES {
        tries += 1;
        let started = std::time::Instant::now();
        match store_sends(&inner, &sends).await {
            Ok(answers) => {
                tracing::debug!(
                    sends = sends.len(),
                    ms = started.elapsed().as_secs_f64() * 1e3,
                    "group stored"
                );
                inner.stored(sends.len());
                for (caller, answer) in callers.drain(..).zip(answers) {
                    caller.answer(Ok(answer));
                }
                sends.clear();
            }
            Err(Declined::Sends(mut named)) => {
                inner.declined();
                named.retain(|i| *i < sends.len());
                named.sort_unstable();
                named.dedup();
                if named.is_empty() {
                    break;
                }
                for i in named.into_iter().rev() {
                    alone.push((sends.remove(i), callers.remove(i)));
                }
            }
            Err(Declined::Group(e)) => {
                inner.declined();
                tracing::debug!(error = %e, sends = sends.len(), "group failed; sending each on its own");
                break;
            }
            Err(Declined::Doubt(e)) => {
                tracing::warn!(error = %e, sends = sends.len(), "a group's commit is in doubt");
                answer_all(callers.drain(..), &e);
                sends.clear();
            }
        }
    }
    alone.extend(sends.into_iter().zip(callers));
    one_by_one(alone, |send| send_alone(&inner, send)).await;
}

/// One send through `sotto_send` (its own transaction and answers).
async fn send_alone(inner: &Inner, send: Sending) -> Result<Enqueued> {
    let known = inner.devices.clone();
    inner.stored(1);
    inner
        .run(Commit::EachStatement, move |c, secret| {
            let (send, known) = (send.clone(), known.clone());
            Box::pin(async move {
                mailbox::enqueue(c, secret, &known, &send.outgoing, send.request.as_ref()).await
            })
        })
        .await
}

/// One call of `sotto_send_many`: every send's answer, in order, once the
/// group is committed.
async fn store_sends(inner: &Inner, jobs: &[Sending]) -> Result<Vec<Enqueued>, Declined> {
    let mut c = inner.pool.get().await.map_err(Declined::Doubt)?;
    let recipients: Vec<Vec<DeviceId>> = jobs
        .iter()
        .map(|j| mailbox::distinct(&j.outgoing.recipients))
        .collect();
    let devices: Vec<DeviceId> = jobs
        .iter()
        .zip(&recipients)
        .flat_map(|(j, r)| std::iter::once(&j.outgoing.sender).chain(r))
        .copied()
        .collect();
    let users = mailbox::resolve(&mut c, &inner.devices, devices.iter())
        .await
        .map_err(Declined::Group)?;
    // Sends naming a device not found would be declined: alone at once.
    let unknown: Vec<usize> = jobs
        .iter()
        .zip(&recipients)
        .enumerate()
        .filter(|(_, (j, r))| {
            std::iter::once(&j.outgoing.sender)
                .chain(r.iter())
                .any(|d| !users.contains_key(d))
        })
        .map(|(i, _)| i)
        .collect();
    if !unknown.is_empty() {
        return Err(Declined::Sends(unknown));
    }

    let n = jobs.len();
    let (mut senders, mut sender_users, mut digests, mut bodies, mut nows) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut device_quotas, mut user_quotas, mut requests, mut expires) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut r_sends, mut r_devices): (Vec<i32>, Vec<&[u8]>) = (Vec::new(), Vec::new());
    let (mut b_sends, mut b_users, mut b_pairs): (Vec<i32>, Vec<i64>, Vec<Vec<u8>>) =
        (Vec::new(), Vec::new(), Vec::new());
    // Per recipient (as numbered in the call): its send and device.
    let mut named: Vec<(usize, DeviceId)> = Vec::new();
    for (i, (job, rs)) in jobs.iter().zip(&recipients).enumerate() {
        let s = &job.outgoing;
        let number = i32::try_from(i + 1).unwrap_or(i32::MAX);
        senders.push(&s.sender.0[..]);
        sender_users.push(users.get(&s.sender).map_or(0, |k| k.user_row));
        digests.push(&s.digest[..]);
        bodies.push(&s.datagram[..]);
        nows.push(int(s.now));
        device_quotas.push(int(s.quota.device_bytes));
        user_quotas.push(int(s.quota.user_bytes));
        requests.push(job.request.as_ref().map(|r| &r.id[..]));
        expires.push(job.request.as_ref().map(|r| int(r.expires_at)));
        for d in rs {
            r_sends.push(number);
            r_devices.push(&d.0[..]);
            named.push((i, *d));
        }
        let (u, p) = mailbox::block_pairs(&inner.secret, &users, &s.sender, rs);
        b_sends.extend(std::iter::repeat(number).take(u.len()));
        b_users.extend(u);
        b_pairs.extend(p);
    }
    c.in_tx = true;
    let rows = c
        .query(
            "SELECT o_recipient, o_seq FROM sotto_send_many($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            &[
                &senders, &sender_users, &digests, &bodies, &nows, &device_quotas, &user_quotas,
                &requests, &expires, &r_sends, &r_devices, &b_sends, &b_users, &b_pairs,
            ],
        )
        .await;
    // (Answered, even with an error: the connection is fit to lend again.)
    c.in_tx = false;
    let rows = rows.map_err(Declined::from_call)?;
    let mut answers: Vec<Enqueued> = jobs
        .iter()
        .map(|j| Enqueued {
            datagram_id: j.outgoing.digest,
            received_at: j.outgoing.now,
            deliveries: Vec::new(),
        })
        .collect();
    for r in rows {
        let (k, seq): (i64, i64) = (r.get(0), r.get(1));
        let (send, device) = usize::try_from(k)
            .ok()
            .and_then(|k| k.checked_sub(1))
            .and_then(|k| named.get(k))
            .copied()
            .ok_or_else(|| {
                // Committed, but not as asked: say so to every sender.
                Declined::Doubt(StoreError::Backend(
                    "the group send named no recipient of it".into(),
                ))
            })?;
        answers[send].deliveries.push(Delivery {
            device,
            seq: seq as u64,
        });
    }
    Ok(answers)
}

/// Acknowledges a group in one call of `sotto_ack_many`, or (rolled back)
/// each on its own.
async fn ack_group(inner: Arc<Inner>, jobs: Vec<AckJob>) {
    let (acks, callers): (Vec<Ack>, Vec<Caller<u32>>) =
        jobs.into_iter().map(|j| (j.ack, j.caller)).unzip();
    if acks.len() > 1 {
        match store_acks(&inner, &acks).await {
            Ok(counts) => {
                inner.stored(acks.len());
                for (caller, n) in callers.into_iter().zip(counts) {
                    caller.answer(n);
                }
                return;
            }
            Err(Declined::Doubt(e)) => {
                tracing::warn!(error = %e, acks = acks.len(), "an ack group's commit is in doubt");
                answer_all(callers, &e);
                return;
            }
            Err(_) => {
                inner.declined();
                tracing::debug!(
                    acks = acks.len(),
                    "ack group failed; acknowledging each on its own"
                );
            }
        }
    }
    one_by_one(acks.into_iter().zip(callers), |ack| ack_alone(&inner, ack)).await;
}

/// One relaxed ack through `sotto_ack`.
async fn ack_alone(inner: &Inner, ack: Ack) -> Result<u32> {
    let retention_ms = u64::from(ack.retain);
    inner.stored(1);
    inner
        .run(Commit::EachStatement, move |c, _| {
            let ack = ack.clone();
            Box::pin(async move {
                mailbox::ack(c, ack.device, &ack.seqs, ack.now, retention_ms, true).await
            })
        })
        .await
}

/// Each ack's count (or its device unknown), in order, once committed.
async fn store_acks(inner: &Inner, jobs: &[Ack]) -> Result<Vec<Result<u32>>, Declined> {
    let mut c = inner.pool.get().await.map_err(Declined::Doubt)?;
    let devices: Vec<&[u8]> = jobs.iter().map(|j| &j.device.0[..]).collect();
    let nows: Vec<i64> = jobs.iter().map(|j| int(j.now)).collect();
    let (mut a_acks, mut seqs): (Vec<i32>, Vec<i64>) = (Vec::new(), Vec::new());
    for (i, job) in jobs.iter().enumerate() {
        let number = i32::try_from(i + 1).unwrap_or(i32::MAX);
        a_acks.extend(std::iter::repeat(number).take(job.seqs.len()));
        seqs.extend(job.seqs.iter());
    }
    c.in_tx = true;
    let rows = c
        .query(
            "SELECT o_ack, o_acked FROM sotto_ack_many($1, $2, $3, $4, $5)",
            &[&devices, &a_acks, &seqs, &nows, &jobs[0].retain],
        )
        .await;
    c.in_tx = false;
    let rows = rows.map_err(Declined::from_call)?;
    let counts: HashMap<i64, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    Ok(jobs
        .iter()
        .enumerate()
        .map(|(i, job)| match counts.get(&(i as i64 + 1)) {
            Some(n) if *n >= 0 => Ok(*n as u32),
            Some(_) => Err(StoreError::UnknownDevice(job.device)),
            None => Err(StoreError::Backend(
                "the group ack left an ack unanswered".into(),
            )),
        })
        .collect())
}
