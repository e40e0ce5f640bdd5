//! File transfer inside a session: offered, chunked (each chunk a sealed,
//! authenticated message), flow-controlled by the receiver's acks, resumed
//! from the receiver's want after a dropped link, and checked against the
//! offered SHA-256 before the receiver's shell makes it visible.
//!
//! The node never touches a file: it asks the shell to read, write, check
//! and discard ([`FileIo`]) and is told the results.

use std::collections::HashMap;

use rand_core::{OsRng, RngCore};

use super::{Act, Config, Event, Node};
use crate::error::{Error, Result};
use crate::wire::{Id, Inner, CHUNK, MAX_FILE_NAME};

/// A file operation for the shell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileIo {
    /// Receiver: open (or create) the partial copy of `file`; answer with
    /// [`Node::file_opened`] and the bytes it already holds.
    Open { file: Id, name: String, size: u64 },
    /// Receiver: write `data` at `offset` of the partial copy.
    Write {
        file: Id,
        offset: u64,
        data: Vec<u8>,
    },
    /// Receiver: every byte arrived. Hash the partial copy; if it is
    /// `sha256`, make it visible under `name`. Answer with
    /// [`Node::file_checked`].
    Check {
        file: Id,
        name: String,
        sha256: [u8; 32],
    },
    /// Receiver: the transfer ended unfinished; delete the partial copy.
    Discard { file: Id },
    /// Sender: read `len` bytes at `offset`; answer with [`Node::file_data`].
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
    /// The transfer ended: `ok` when the whole file matched its hash.
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
    sha256: [u8; 32],
    /// Everything before `next` has been asked of the shell.
    next: u64,
    /// Everything before `acked` is written on the receiver's side.
    acked: u64,
    /// The receiver asked for data (cleared while the link is down).
    wanted: bool,
}

struct In {
    session: Id,
    name: String,
    size: u64,
    sha256: [u8; 32],
    next: u64,
    acked: u64,
    opened: bool,
    checking: bool,
}

#[derive(Default)]
pub(crate) struct Files {
    out: HashMap<Id, Out>,
    inn: HashMap<Id, In>,
}

fn ev(e: FileEvent) -> Act {
    Act::Event(Event::File(e))
}

/// A file name is one path component a receiver can create as is.
pub fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_FILE_NAME
        && name != "."
        && name != ".."
        && !name.starts_with('.')
        && !name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control())
}

impl Files {
    fn pump(out: &mut Out, id: Id, window: u64, acts: &mut Vec<Act>) {
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

    /// The link of these sessions went down: senders wait for a want.
    pub(crate) fn pause_sessions(&mut self, sessions: &[Id]) {
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
    pub(crate) fn resume_session(&mut self, session: Id) -> Vec<Act> {
        let mut acts = Vec::new();
        for (id, inn) in self.inn.iter_mut().filter(|(_, i)| i.session == session) {
            if inn.opened && !inn.checking {
                inn.acked = inn.next;
                acts.push(Act::Seal(
                    session,
                    Inner::FileWant {
                        id: *id,
                        offset: inn.next,
                    },
                ));
            }
        }
        for (id, out) in self.out.iter().filter(|(_, o)| o.session == session) {
            if !out.wanted && out.acked == 0 {
                acts.push(Act::Seal(session, offer(*id, out)));
            }
        }
        acts
    }

    /// The session ended: every transfer on it fails.
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
            let keep = i.session != session;
            if !keep {
                acts.extend(failed(*id, i.name.clone(), true));
            }
            keep
        });
        acts
    }

    /// A file message from the peer of `session`.
    pub(crate) fn on_message(
        &mut self,
        session: Id,
        inner: Inner,
        config: &Config,
    ) -> std::result::Result<Vec<Act>, &'static str> {
        let mut acts = Vec::new();
        match inner {
            Inner::FileOffer {
                id,
                name,
                size,
                sha256,
            } => {
                if let Some(inn) = self.inn.get(&id) {
                    if inn.session != session {
                        return Err("an offer reusing another session's file id");
                    }
                    if inn.opened && !inn.checking {
                        acts.push(Act::Seal(
                            session,
                            Inner::FileWant {
                                id,
                                offset: inn.next,
                            },
                        ));
                    }
                    return Ok(acts);
                }
                if !valid_file_name(&name)
                    || size > config.max_file_size
                    || self.inn.len() >= config.max_incoming_files
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
                        sha256,
                        next: 0,
                        acked: 0,
                        opened: false,
                        checking: false,
                    },
                );
            }
            Inner::FileChunk { id, offset, data } => {
                let inn = match self.inn.get_mut(&id) {
                    Some(i) if i.session == session => i,
                    _ => return Err("a chunk for no transfer"),
                };
                // A chunk other than the next one (sent before a want
                // moved the sender) is ignored.
                if !inn.opened || inn.checking || offset != inn.next || data.is_empty() {
                    return Ok(acts);
                }
                if data.len() as u64 > inn.size - inn.next {
                    return Err("a chunk past the end of the file");
                }
                inn.next += data.len() as u64;
                acts.push(Act::File(FileIo::Write {
                    file: id,
                    offset,
                    data,
                }));
                if inn.next - inn.acked >= config.ack_every || inn.next == inn.size {
                    inn.acked = inn.next;
                    acts.push(Act::Seal(
                        session,
                        Inner::FileAck {
                            id,
                            offset: inn.next,
                        },
                    ));
                    acts.push(ev(FileEvent::Progress {
                        file: id,
                        done: inn.next,
                        total: inn.size,
                        incoming: true,
                    }));
                }
                if inn.next == inn.size {
                    inn.checking = true;
                    acts.push(Act::File(FileIo::Check {
                        file: id,
                        name: inn.name.clone(),
                        sha256: inn.sha256,
                    }));
                }
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
                Self::pump(out, id, config.file_window, &mut acts);
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
                acts.push(ev(FileEvent::Progress {
                    file: id,
                    done: offset,
                    total: out.size,
                    incoming: false,
                }));
                Self::pump(out, id, config.file_window, &mut acts);
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
                } else if let Some(inn) = self.inn.remove(&id) {
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
        sha256: out.sha256,
    }
}

impl Node {
    /// Offers a file on session `session`. The shell knows the file's
    /// `size` and `sha256` (it hashed it) and serves the reads.
    pub fn send_file(
        &mut self,
        session: &Id,
        name: &str,
        size: u64,
        sha256: [u8; 32],
    ) -> Result<Id> {
        if !valid_file_name(name) {
            return Err(Error::BadFileName(name.to_string()));
        }
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        let out = Out {
            session: *session,
            name: name.to_string(),
            size,
            sha256,
            next: 0,
            acked: 0,
            wanted: false,
        };
        self.seal(session, &offer(id, &out))?;
        self.files.out.insert(id, out);
        Ok(id)
    }

    /// Receiver: the partial copy of `file` is open and holds `have` bytes.
    pub fn file_opened(&mut self, file: &Id, have: u64) {
        let Some(inn) = self.files.inn.get_mut(file) else {
            return;
        };
        let have = have.min(inn.size);
        inn.opened = true;
        inn.next = have;
        inn.acked = have;
        let (session, name, size) = (inn.session, inn.name.clone(), inn.size);
        let mut acts = vec![
            ev(FileEvent::Offered {
                session,
                file: *file,
                name: name.clone(),
                size,
            }),
            Act::Seal(
                session,
                Inner::FileWant {
                    id: *file,
                    offset: have,
                },
            ),
        ];
        if have == size {
            inn.checking = true;
            acts.push(Act::File(FileIo::Check {
                file: *file,
                name,
                sha256: inn.sha256,
            }));
        }
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
    pub fn file_data(&mut self, file: &Id, offset: u64, data: Vec<u8>) {
        let Some(out) = self.files.out.get(file) else {
            return;
        };
        if !out.wanted || offset >= out.next {
            return; // asked before the link dropped: the want re-asks
        }
        let session = out.session;
        self.apply(vec![Act::Seal(
            session,
            Inner::FileChunk {
                id: *file,
                offset,
                data,
            },
        )]);
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
