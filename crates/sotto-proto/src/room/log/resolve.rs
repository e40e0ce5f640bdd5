//! Resolution: the entries held, in resolved order ([`SortKey`]), folded
//! into the room state from the first position that changed, and the
//! rejected entries of non-members dropped once reported.

use std::collections::HashMap;

use super::super::entry::EntryHash;
use super::super::state::{apply, Event, Notice};
use super::super::{RejectReason, Ttl};
use super::{LogHead, RoomLog, Slot, SortKey, Update, CHECKPOINT_EVERY};

impl RoomLog {
    /// Replays the resolved order from the first position at or after
    /// `min`, reporting outcomes that are new or changed.
    ///
    /// Then drops what senders who are not members sent (see
    /// [`RoomLog::drop_strangers`]), once reported, and takes back what
    /// was set aside from senders who are members again.
    pub(super) fn resolve(&mut self, mut min: Option<SortKey>, update: &mut Update) {
        let mut seen = update.notices.len();
        while let Some(m) = min.take() {
            self.replay(m, update);
            if let Some(first) = self.drop_strangers(update) {
                let start = self.order.partition_point(|k| *k < first);
                if start == self.order.len() {
                    // Only the tail went, and rejected entries change no state.
                    self.slots.truncate(start);
                    self.checkpoints
                        .truncate(start.div_ceil(CHECKPOINT_EVERY).max(1));
                } else {
                    self.replay(first, update);
                }
            }
            min = self.revive(update, seen);
            seen = update.notices.len();
        }
        // Report only what is still held / still gone at the end.
        update
            .pending
            .retain(|p| self.pending.contains_key(&p.entry));
        update.dropped.retain(|h| !self.nodes.contains_key(h));
    }

    /// Entries set aside from users whose membership the notices from
    /// `seen` on changed (added, removed, left, at any position) are placed
    /// again and resolved like the rest, so that this replica ends as one
    /// that never dropped them. The smallest key placed, if any.
    fn revive(&mut self, update: &mut Update, seen: usize) -> Option<SortKey> {
        if self.aside.is_empty() {
            return None;
        }
        let mut back = Vec::new();
        for n in &update.notices[seen.min(update.notices.len())..] {
            match &n.event {
                Event::Created { .. } => back.extend(self.aside.keys().copied()),
                Event::MemberAdded(u) | Event::MemberRemoved(u) => back.push(*u),
                Event::Left => back.push(n.by),
                _ => {}
            }
        }
        back.sort();
        back.dedup();
        let mut min = None;
        for u in back {
            let Some(list) = self.aside.remove(&u) else {
                continue;
            };
            self.aside_count -= list.len();
            // Oldest first: a chain goes back parent before child.
            for (hash, node) in list.into_iter().rev() {
                if update.dropped.contains(&hash) {
                    // Dropped in this call, knowing these notices: stays.
                    self.set_aside(hash, node);
                    continue;
                }
                if !self.nodes.contains_key(&hash) && !self.pending.contains_key(&hash) {
                    self.place(hash, node.entry, node.bytes, node.meta, update, &mut min);
                }
            }
        }
        min
    }

    /// Rejected entries whose sender is not a member now and that no entry
    /// names as parent: reported already, they are removed from the log
    /// (and the store), so a non-member cannot grow anyone's log or become
    /// a parent of honest entries. A removed member's entries that a
    /// member's entry names stay (the log must stay whole). Every slot is
    /// looked at (a match per entry), not only the replayed ones: whether
    /// an entry goes depends on the entries held, not on the order they
    /// came in. Returns the smallest key removed.
    fn drop_strangers(&mut self, update: &mut Update) -> Option<SortKey> {
        self.state.as_ref()?;
        let mut first = None;
        // Newest first, so a non-member's chain goes leaf by leaf.
        for i in (0..self.slots.len()).rev() {
            let s = &self.slots[i];
            let Event::Rejected {
                reason: RejectReason::NotMember,
                ..
            } = s.event
            else {
                continue;
            };
            let n = &self.nodes[&s.key.hash];
            let member = self
                .state
                .as_ref()
                .is_some_and(|st| st.is_member(&n.entry.sender.user));
            if n.children > 0 || member {
                continue;
            }
            let key = s.key;
            if let Some(node) = self.remove_leaf(&key.hash) {
                self.set_aside(key.hash, node);
            }
            update.dropped.push(key.hash);
            first = Some(key);
        }
        first
    }

    /// Replays from the first position at or after `min`; returns it.
    fn replay(&mut self, min: SortKey, update: &mut Update) -> usize {
        let start = self.order.partition_point(|k| *k < min);
        let (pos, mut state) = if start >= self.slots.len() {
            // Only appended: carry on from the current state.
            (self.slots.len(), self.state.take())
        } else {
            let j = (start / CHECKPOINT_EVERY).min(self.checkpoints.len() - 1);
            self.checkpoints.truncate(j + 1);
            (j * CHECKPOINT_EVERY, self.checkpoints[j].clone())
        };
        let old: HashMap<EntryHash, Event> = self
            .slots
            .drain(pos..)
            .map(|s| (s.key.hash, s.event))
            .collect();
        let mut head = self
            .slots
            .last()
            .map_or_else(|| LogHead::genesis(&self.group), |s| s.head);
        for i in pos..self.order.len() {
            if i % CHECKPOINT_EVERY == 0 && i / CHECKPOINT_EVERY == self.checkpoints.len() {
                self.checkpoints.push(state.clone());
            }
            let key = self.order[i];
            let node = &self.nodes[&key.hash];
            let ttl = state.as_ref().map_or(Ttl::OFF, |s| s.ttl);
            let event = apply(&mut state, &node.entry);
            head = head.next(&key.hash);
            let revised = match old.get(&key.hash) {
                Some(e) if *e == event => None,
                Some(_) => Some(true),
                None => Some(false),
            };
            if let Some(revised) = revised {
                update.notices.push(Notice {
                    entry: key.hash,
                    message_id: node.entry.message_id,
                    by: node.entry.sender.user,
                    at: node.entry.timestamp,
                    event: event.clone(),
                    revised,
                });
            }
            self.slots.push(Slot {
                key,
                event,
                ttl,
                head,
            });
        }
        self.state = state;
        pos
    }
}
