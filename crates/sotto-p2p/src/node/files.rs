//! File transfer inside a session: offered, chunked (each chunk a sealed,
//! authenticated message of the session), flow-controlled by the
//! receiver's acks of bytes it has written, resumed from the receiver's
//! want after a dropped link, and made visible by the receiver's shell only
//! once every byte of the offered size has arrived in order.
//!
//! Why that checks the whole file (no whole-file hash, since wire version
//! 2): the offer (file id, size) and every chunk (file id, offset, bytes)
//! are messages sealed under the session's key for this direction, whose
//! counter only grows; the receiver takes a chunk only at the offset where
//! the bytes it holds end, and only up to the offered size, and makes the
//! file visible only when it holds exactly that size. So the file it shows
//! is the sequence of bytes the authenticated sender sealed for that file
//! id in that session, in order, whole: a chunk reordered, repeated,
//! dropped, truncated, forged, or taken from another file or session
//! either does not open (the peer is disconnected), or is ignored (the
//! want of a resume asks again), or never completes the file. The partial
//! copy on disk is always a prefix of that sequence; it is begun afresh
//! for every offer, so nothing from an earlier run is trusted.
//!
//! The node never touches a file: it asks the shell to read, write, check
//! and discard ([`FileIo`]) and is told the results.

use std::collections::HashMap;

use rand_core::{OsRng, RngCore};

use super::{Act, Config, Event, Node};
use crate::error::{Error, Result};
use crate::wire::{FileBytes, Id, Inner, CHUNK, MAX_FILE_NAME, MAX_FILE_WINDOW};

/// A file operation for the shell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileIo {
    /// Receiver: create the partial copy of `file`, empty (a partial copy
    /// left by an earlier run is not trusted); answer with
    /// [`Node::file_opened`].
    Open { file: Id, name: String, size: u64 },
    /// Receiver: write `data` at `offset` of the partial copy (writes come
    /// in order, each where the last ended); answer with
    /// [`Node::file_written`] once the bytes are written.
    Write {
        file: Id,
        offset: u64,
        data: FileBytes,
    },
    /// Receiver: every byte of the file has arrived and comes after the
    /// writes already asked for. Once they are written, sync the partial
    /// copy and make it visible under `name`. Answer with
    /// [`Node::file_checked`].
    Check { file: Id, name: String },
    /// Receiver: the transfer ended unfinished; delete the partial copy.
    Discard { file: Id },
    /// Sender: read `len` bytes (at most [`CHUNK`]) at `offset`; answer
    /// with [`Node::file_data`] (ideally into a buffer with
    /// [`crate::wire::CHUNK_FRAME_HEAD`] bytes of room in front, see
    /// [`FileBytes`]), or [`Node::file_failed`] if the file changed.
    Read { file: Id, offset: u64, len: usize },
    /// Sender: the transfer ended; the file can be closed.
    Release { file: Id },
}

/// What the application hears about transfers (both sides).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileEvent {
    /// Receiver: a file is coming (transfers inside an accepted session
    /// are accepted).
    Offered {
        session: Id,
        file: Id,
        name: String,
        size: u64,
    },
    /// Bytes the receiver has written (both sides learn it from the acks).
    Progress {
        file: Id,
        done: u64,
        total: u64,
        incoming: bool,
    },
    /// The transfer ended: `ok` when the whole file arrived and (receiver)
    /// was made visible.
    Complete {
        file: Id,
        name: String,
        incoming: bool,
        ok: bool,
    },
}

struct Out {
    session: Id,
    name: String,
    size: u64,
    /// Everything before `next` has been asked of the shell.
    next: u64,
    /// Everything before `acked` is written on the receiver's side.
    acked: u64,
    /// The receiver asked for data (cleared while the link is down).
    wanted: bool,
    /// Unix ms of the receiver's last want or ack (see `file_stall_ms`).
    heard: u64,
}

struct In {
    session: Id,
    name: String,
    size: u64,
    /// Everything before `next` has arrived (and is queued for writing).
    next: u64,
    /// Everything before `written` is on disk.
    written: u64,
    /// The last ack (or want) sent: the sender's window starts there.
    /// Never past `written`, so the window bounds what waits for the disk.
    acked: u64,
    /// A want (resume) waits for the disk to catch up with `next`: asking
    /// from `next` earlier would let the sender add a window to the bytes
    /// still queued for writing, at every reconnect.
    want_held: bool,
    opened: bool,
    checking: bool,
    /// Unix ms of the last chunk (or of the offer or resume).
    heard: u64,
    /// Unix ms when the link went down (`None` while it is up): the
    /// transfer waits for a resume until `file_resume_ms` after it.
    down_since: Option<u64>,
}

#[derive(Default)]
pub(crate) struct Files {
    out: HashMap<Id, Out>,
    inn: HashMap<Id, In>,
}

fn ev(e: FileEvent) -> Act {
    Act::Event(Event::File(e))
}

/// Unicode format characters (general category Cf, Unicode 15: bidi
/// overrides and isolates, zero-width characters, invisible operators,
/// tags) and the line and paragraph separators (Zl, Zp): they make a name
/// display as another (`gpj.exe` shown as `exe.jpg`) or break a line.
/// No Unicode crate is in the tree, hence the list.
const HIDDEN: &[(char, char)] = &[
    ('\u{00AD}', '\u{00AD}'),
    ('\u{0600}', '\u{0605}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{06DD}', '\u{06DD}'),
    ('\u{070F}', '\u{070F}'),
    ('\u{0890}', '\u{0891}'),
    ('\u{08E2}', '\u{08E2}'),
    ('\u{180E}', '\u{180E}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{2028}', '\u{202E}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFF9}', '\u{FFFB}'),
    ('\u{110BD}', '\u{110BD}'),
    ('\u{110CD}', '\u{110CD}'),
    ('\u{13430}', '\u{1343F}'),
    ('\u{1BCA0}', '\u{1BCA3}'),
    ('\u{1D173}', '\u{1D17A}'),
    ('\u{E0001}', '\u{E0001}'),
    ('\u{E0020}', '\u{E007F}'),
];

fn hidden(c: char) -> bool {
    HIDDEN.iter().any(|&(lo, hi)| lo <= c && c <= hi)
}

/// A file name is one path component a receiver can create as is, and
/// shows as what it is: no control, format (bidi, zero-width) or
/// line-separator characters.
pub fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_FILE_NAME
        && name != "."
        && name != ".."
        && !name.starts_with('.')
        && !name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control() || hidden(c))
}

impl In {
    /// Asks the sender for the bytes from `next` once everything before
    /// it is written (see `want_held`).
    fn want(&mut self, id: Id, acts: &mut Vec<Act>) {
        if self.written < self.next {
            self.want_held = true;
            return;
        }
        self.want_held = false;
        self.acked = self.next;
        acts.push(Act::Seal(
            self.session,
            Inner::FileWant {
                id,
                offset: self.next,
            },
        ));
    }

    /// When this transfer is due to be given up (Unix ms): its peer, linked,
    /// sent nothing for `stall_ms`, or its link stayed down `resume_ms`.
    /// `None` for work that is not waiting on the peer. `next_deadline`
    /// and `expire` both use it, so a deadline that passed is always acted
    /// on (never a time in the past for work that will not be done).
    fn due(&self, stall_ms: u64, resume_ms: u64, linked: bool) -> Option<u64> {
        if !self.opened || self.checking {
            return None;
        }
        match self.down_since {
            Some(t) => Some(t.saturating_add(resume_ms)),
            None if linked => Some(self.heard.saturating_add(stall_ms)),
            None => None,
        }
    }

    /// Every byte of the offered size arrived: the shell makes the file
    /// visible (after the writes it already has, which it runs in order).
    fn check_if_complete(&mut self, id: Id, acts: &mut Vec<Act>) {
        if self.opened && !self.checking && self.next == self.size {
            self.checking = true;
            acts.push(Act::File(FileIo::Check {
                file: id,
                name: self.name.clone(),
            }));
        }
    }
}

impl Files {
    fn pump(out: &mut Out, id: Id, config: &Config, acts: &mut Vec<Act>) {
        let window = config.file_window.min(MAX_FILE_WINDOW);
        while out.wanted && out.next < out.size && out.next - out.acked < window {
            let len = (out.size - out.next).min(CHUNK as u64) as usize;
            acts.push(Act::File(FileIo::Read {
                file: id,
                offset: out.next,
                len,
            }));
            out.next += len as u64;
        }
    }

    /// The link of these sessions went down: senders wait for a want,
    /// receivers for a resume (until `file_resume_ms`).
    pub(crate) fn pause_sessions(&mut self, sessions: &[Id], now: u64) {
        for inn in self
            .inn
            .values_mut()
            .filter(|i| sessions.contains(&i.session))
        {
            inn.down_since.get_or_insert(now);
        }
        for out in self
            .out
            .values_mut()
            .filter(|o| sessions.contains(&o.session))
        {
            out.wanted = false;
            out.next = out.acked;
        }
    }

    /// The link of `session` is back: receivers ask for the rest, senders
    /// whose offer may have been lost offer again.
    pub(crate) fn resume_session(&mut self, session: Id, now: u64) -> Vec<Act> {
        let mut acts = Vec::new();
        for (id, inn) in self.inn.iter_mut().filter(|(_, i)| i.session == session) {
            inn.heard = now;
            inn.down_since = None;
            if inn.opened && !inn.checking {
                inn.want(*id, &mut acts);
            }
        }
        for (id, out) in self.out.iter_mut().filter(|(_, o)| o.session == session) {
            out.heard = now;
            if !out.wanted && out.acked == 0 {
                acts.push(Act::Seal(session, offer(*id, out)));
            }
        }
        acts
    }

    /// The session ended: every transfer on it fails, but for received
    /// files being checked (every byte arrived): they end with the check.
    pub(crate) fn drop_session(&mut self, session: Id) -> Vec<Act> {
        let mut acts = Vec::new();
        self.out.retain(|id, o| {
            let keep = o.session != session;
            if !keep {
                acts.extend(failed(*id, o.name.clone(), false));
            }
            keep
        });
        self.inn.retain(|id, i| {
            let keep = i.session != session || i.checking;
            if !keep {
                acts.extend(failed(*id, i.name.clone(), true));
            }
            keep
        });
        acts
    }

    /// When the first transfer that waits on its peer is due to be given
    /// up (Unix ms): the same conditions as [`Files::expire`].
    pub(crate) fn next_deadline(
        &self,
        stall_ms: u64,
        resume_ms: u64,
        linked: impl Fn(&Id) -> bool,
    ) -> Option<u64> {
        let outs = self
            .out
            .values()
            .filter(|o| o.wanted && o.next > o.acked && linked(&o.session))
            .map(|o| o.heard.saturating_add(stall_ms));
        let ins = self
            .inn
            .values()
            .filter_map(|i| i.due(stall_ms, resume_ms, linked(&i.session)));
        outs.chain(ins).min()
    }

    /// Cancels the transfers on linked sessions whose peer has not moved
    /// them for `stall_ms`: a sender that stops sending, or a receiver that
    /// stops acknowledging, holds a file and a transfer slot no longer.
    /// Discards the incoming ones whose link has been down `resume_ms`.
    pub(crate) fn expire(
        &mut self,
        now: u64,
        stall_ms: u64,
        resume_ms: u64,
        linked: impl Fn(&Id) -> bool,
    ) -> Vec<Act> {
        let late =
            |heard: u64, session: &Id| heard.saturating_add(stall_ms) <= now && linked(session);
        let mut acts = Vec::new();
        self.out.retain(|id, o| {
            let stalled = o.wanted && o.next > o.acked && late(o.heard, &o.session);
            if stalled {
                tracing::info!(file = %hex::encode(id), "receiver stopped acknowledging; transfer cancelled");
                acts.push(Act::Seal(o.session, Inner::FileCancel { id: *id }));
                acts.extend(failed(*id, o.name.clone(), false));
            }
            !stalled
        });
        self.inn.retain(|id, i| {
            let due = i.due(stall_ms, resume_ms, linked(&i.session));
            let stalled = due.is_some_and(|t| t <= now);
            if stalled {
                if i.down_since.is_some() {
                    tracing::info!(file = %hex::encode(id), "sender gone too long; transfer discarded");
                } else {
                    tracing::info!(file = %hex::encode(id), "sender stopped sending; transfer cancelled");
                    acts.push(Act::Seal(i.session, Inner::FileCancel { id: *id }));
                }
                acts.extend(failed(*id, i.name.clone(), true));
            }
            !stalled
        });
        acts
    }

    /// A file chunk from the peer of `session` (opened in that session).
    pub(crate) fn on_chunk(
        &mut self,
        session: Id,
        id: Id,
        offset: u64,
        data: FileBytes,
        now: u64,
    ) -> std::result::Result<Vec<Act>, &'static str> {
        let mut acts = Vec::new();
        let inn = match self.inn.get_mut(&id) {
            Some(i) if i.session == session => i,
            Some(_) => return Err("a chunk for another session's transfer"),
            // The transfer ended here (cancelled, failed, checked) while
            // the sender still had chunks on the way.
            None => return Ok(acts),
        };
        // A chunk other than the next one (sent before a want moved the
        // sender) is ignored.
        if !inn.opened || inn.checking || offset != inn.next || data.is_empty() {
            return Ok(acts);
        }
        if data.len() as u64 > inn.size - inn.next {
            return Err("a chunk past the end of the file");
        }
        // The sender may start one chunk before its window is full;
        // anything further would be memory this node holds for a peer
        // that does not wait for acks.
        let end = inn.next + data.len() as u64;
        if end > inn.acked + MAX_FILE_WINDOW + CHUNK as u64 {
            return Err("a chunk beyond the window");
        }
        inn.next = end;
        inn.heard = now;
        acts.push(Act::File(FileIo::Write {
            file: id,
            offset,
            data,
        }));
        inn.check_if_complete(id, &mut acts);
        Ok(acts)
    }

    /// A file message from the peer of `session`.
    pub(crate) fn on_message(
        &mut self,
        session: Id,
        inner: Inner,
        config: &Config,
        now: u64,
        same_peer: impl Fn(&Id) -> bool,
    ) -> std::result::Result<Vec<Act>, &'static str> {
        let mut acts = Vec::new();
        match inner {
            Inner::FileOffer { id, name, size } => {
                if let Some(inn) = self.inn.get_mut(&id) {
                    if inn.session != session {
                        return Err("an offer reusing another session's file id");
                    }
                    if inn.opened && !inn.checking {
                        inn.want(id, &mut acts);
                    }
                    return Ok(acts);
                }
                let from_peer = self.inn.values().filter(|i| same_peer(&i.session)).count();
                if !valid_file_name(&name)
                    || size > config.max_file_size
                    || self.inn.len() >= config.max_incoming_files
                    || from_peer >= config.max_incoming_files_per_peer
                {
                    acts.push(Act::Seal(session, Inner::FileCancel { id }));
                    return Ok(acts);
                }
                acts.push(Act::File(FileIo::Open {
                    file: id,
                    name: name.clone(),
                    size,
                }));
                self.inn.insert(
                    id,
                    In {
                        session,
                        name,
                        size,
                        next: 0,
                        written: 0,
                        acked: 0,
                        want_held: false,
                        opened: false,
                        checking: false,
                        heard: now,
                        down_since: None,
                    },
                );
            }
            Inner::FileChunk { id, offset, data } => {
                return self.on_chunk(session, id, offset, data.into(), now);
            }
            Inner::FileWant { id, offset } => {
                let out = match self.out.get_mut(&id) {
                    Some(o) if o.session == session => o,
                    _ => return Ok(acts),
                };
                if offset > out.size {
                    return Err("a want past the end of the file");
                }
                out.next = offset;
                out.acked = offset;
                out.wanted = true;
                out.heard = now;
                // A want of the whole size: nothing left to send; the
                // receiver's result follows.
                Self::pump(out, id, config, &mut acts);
            }
            Inner::FileAck { id, offset } => {
                let out = match self.out.get_mut(&id) {
                    Some(o) if o.session == session => o,
                    _ => return Ok(acts),
                };
                if offset > out.next || offset < out.acked {
                    return Err("an ack of bytes not sent");
                }
                out.acked = offset;
                out.heard = now;
                acts.push(ev(FileEvent::Progress {
                    file: id,
                    done: offset,
                    total: out.size,
                    incoming: false,
                }));
                Self::pump(out, id, config, &mut acts);
            }
            Inner::FileResult { id, ok } => {
                if let Some(out) = self.out.remove(&id) {
                    acts.push(Act::File(FileIo::Release { file: id }));
                    acts.push(ev(FileEvent::Complete {
                        file: id,
                        name: out.name,
                        incoming: false,
                        ok,
                    }));
                }
            }
            Inner::FileCancel { id } => {
                if let Some(out) = self.out.remove(&id) {
                    acts.extend(failed(id, out.name, false));
                } else if self.inn.get(&id).is_some_and(|i| !i.checking) {
                    // A cancel racing the check of a file whose every byte
                    // arrived is ignored: the check decides.
                    let inn = self.inn.remove(&id).expect("present");
                    acts.extend(failed(id, inn.name, true));
                }
            }
            _ => unreachable!("only file messages are routed here"),
        }
        Ok(acts)
    }
}

/// A transfer that ends unfinished: its file is released (sender) or its
/// partial copy discarded (receiver), and the application is told.
fn failed(file: Id, name: String, incoming: bool) -> [Act; 2] {
    let io = if incoming {
        FileIo::Discard { file }
    } else {
        FileIo::Release { file }
    };
    [
        Act::File(io),
        ev(FileEvent::Complete {
            file,
            name,
            incoming,
            ok: false,
        }),
    ]
}

fn offer(id: Id, out: &Out) -> Inner {
    Inner::FileOffer {
        id,
        name: out.name.clone(),
        size: out.size,
    }
}

impl Node {
    /// Offers a file of `size` bytes on session `session`. The shell serves
    /// the reads ([`FileIo::Read`]).
    pub fn send_file(&mut self, session: &Id, name: &str, size: u64) -> Result<Id> {
        if !valid_file_name(name) {
            return Err(Error::BadFileName(name.to_string()));
        }
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        let out = Out {
            session: *session,
            name: name.to_string(),
            size,
            next: 0,
            acked: 0,
            wanted: false,
            heard: self.now,
        };
        self.seal(session, &offer(id, &out))?;
        self.files.out.insert(id, out);
        Ok(id)
    }

    /// Receiver: the partial copy of `file` is created (empty).
    pub fn file_opened(&mut self, file: &Id) {
        let now = self.now;
        let Some(inn) = self.files.inn.get_mut(file) else {
            return;
        };
        inn.opened = true;
        inn.next = 0;
        inn.written = 0;
        inn.acked = 0;
        inn.heard = now;
        let (session, name, size) = (inn.session, inn.name.clone(), inn.size);
        let mut acts = vec![
            ev(FileEvent::Offered {
                session,
                file: *file,
                name,
                size,
            }),
            Act::Seal(
                session,
                Inner::FileWant {
                    id: *file,
                    offset: 0,
                },
            ),
        ];
        // An empty file is whole already.
        inn.check_if_complete(*file, &mut acts);
        self.apply(acts);
    }

    /// Receiver: everything before `upto` of `file` is written. Acks
    /// (which let the sender go on) follow the disk, not the network, so a
    /// slow disk holds at most the window in memory.
    pub fn file_written(&mut self, file: &Id, upto: u64) {
        let ack_every = self.config.ack_every;
        let Some(inn) = self.files.inn.get_mut(file) else {
            return;
        };
        inn.written = inn.written.max(upto.min(inn.next));
        if inn.want_held {
            // No acks while a want waits (the sender's window restarts
            // at the want); the want goes once the disk caught up.
            let mut acts = Vec::new();
            inn.want(*file, &mut acts);
            self.apply(acts);
            return;
        }
        let w = inn.written;
        if w <= inn.acked || (w - inn.acked < ack_every && w != inn.size) {
            return;
        }
        inn.acked = w;
        let acts = vec![
            Act::Seal(
                inn.session,
                Inner::FileAck {
                    id: *file,
                    offset: w,
                },
            ),
            ev(FileEvent::Progress {
                file: *file,
                done: w,
                total: inn.size,
                incoming: true,
            }),
        ];
        self.apply(acts);
    }

    /// Receiver: the result of a [`FileIo::Check`] (or a failed write,
    /// `ok = false`).
    pub fn file_checked(&mut self, file: &Id, ok: bool) {
        let Some(inn) = self.files.inn.remove(file) else {
            return;
        };
        let mut acts = vec![Act::Seal(inn.session, Inner::FileResult { id: *file, ok })];
        if !ok {
            acts.push(Act::File(FileIo::Discard { file: *file }));
        }
        acts.push(ev(FileEvent::Complete {
            file: *file,
            name: inn.name,
            incoming: true,
            ok,
        }));
        self.apply(acts);
    }

    /// Sender: the bytes a [`FileIo::Read`] asked for.
    pub fn file_data(&mut self, file: &Id, offset: u64, data: FileBytes) {
        let Some(out) = self.files.out.get(file) else {
            return;
        };
        if !out.wanted || offset >= out.next || data.is_empty() {
            return; // asked before the link dropped: the want re-asks
        }
        let session = out.session;
        self.apply(vec![Act::Chunk {
            session,
            file: *file,
            offset,
            data,
        }]);
    }

    /// Sender: reading failed (the file changed or vanished): the transfer
    /// is cancelled on both sides.
    pub fn file_failed(&mut self, file: &Id) {
        if let Some(out) = self.files.out.remove(file) {
            let mut acts = vec![Act::Seal(out.session, Inner::FileCancel { id: *file })];
            acts.extend(failed(*file, out.name, false));
            self.apply(acts);
        } else if self.files.inn.contains_key(file) {
            self.file_checked(file, false);
        }
    }
}

#[cfg(test)]
mod name_tests {
    use super::valid_file_name;

    #[test]
    fn names_with_hidden_or_control_characters_are_refused() {
        for bad in [
            "invoice\u{202E}gpj.exe",
            "a\u{200B}b.txt",
            "a\u{2066}b\u{2069}.txt",
            "line\u{2028}break",
            "para\u{2029}break",
            "bom\u{FEFF}.txt",
            "soft\u{00AD}hyphen",
            "tag\u{E0041}.txt",
            "nel\u{0085}.txt",
            "tab\t.txt",
            "nul\0.txt",
        ] {
            assert!(!valid_file_name(bad), "{bad:?}");
        }
        for good in [
            "report.pdf",
            "Übersicht 2024.txt",
            "写真.jpg",
            "a b (1).tar.gz",
        ] {
            assert!(valid_file_name(good), "{good:?}");
        }
    }
}
