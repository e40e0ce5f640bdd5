//! The files a node reads and writes for its transfers, each on a thread
//! of its own so that disk work and hashing stay off the node's loop:
//! partial copies in `<files>/.partial/<file id>`, hashed as they are
//! written and made visible in `<files>/` only after the whole file matched
//! the sender's SHA-256; sources read in order and hashed as they are read.
//!
//! A worker takes its orders from an unbounded channel and answers on
//! another ([`DiskMsg`]); both are bounded in practice by the node's file
//! window (the node asks for no more reads, and accepts no more chunks,
//! than the window allows).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;

use crate::wire::Id;

/// Reads (hashing, and resuming a partial copy) go in blocks of this size.
const BLOCK: usize = 1 << 20;

/// What a worker tells the node's loop.
#[derive(Debug)]
pub(crate) enum DiskMsg {
    /// Receiver: everything before `upto` is written.
    Written { file: Id, upto: u64 },
    /// Receiver: the check is done; `saved` is where the file now is, or
    /// `None` when it did not match (or could not be written).
    Checked { file: Id, saved: Option<PathBuf> },
    /// Sender: bytes asked for.
    Data {
        file: Id,
        offset: u64,
        data: Vec<u8>,
    },
    /// Sender: the whole file is hashed.
    Hashed { file: Id, sha256: [u8; 32] },
    /// Either side: the file could not be read or written.
    Failed { file: Id },
}

enum WriteCmd {
    Write { offset: u64, data: Vec<u8> },
    Check { name: String, sha256: [u8; 32] },
    Discard,
}

pub(crate) struct Disk {
    dir: PathBuf,
    writers: HashMap<Id, std_mpsc::Sender<WriteCmd>>,
    readers: HashMap<Id, std_mpsc::Sender<(u64, usize)>>,
    tx: mpsc::UnboundedSender<DiskMsg>,
}

/// SHA-256 and length of a file, read in 1 MiB blocks.
pub fn hash_file(path: &Path) -> std::io::Result<(u64, [u8; 32])> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let len = hash_prefix(&mut f, &mut h, u64::MAX)?;
    Ok((len, h.finalize().into()))
}

/// Feeds `h` with the bytes of `f` from its position, up to `limit` of
/// them; returns how many it read.
fn hash_prefix(f: &mut File, h: &mut Sha256, limit: u64) -> std::io::Result<u64> {
    let mut buf = vec![0u8; BLOCK];
    let mut done = 0u64;
    while done < limit {
        let want = (limit - done).min(BLOCK as u64) as usize;
        let n = f.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        done += n as u64;
    }
    Ok(done)
}

impl Disk {
    pub(crate) fn new(dir: PathBuf, tx: mpsc::UnboundedSender<DiskMsg>) -> Disk {
        Disk {
            dir,
            writers: HashMap::new(),
            readers: HashMap::new(),
            tx,
        }
    }

    fn partial(&self, file: &Id) -> PathBuf {
        self.dir.join(".partial").join(hex::encode(file))
    }

    /// Opens (or creates) the partial copy and starts its writer; returns
    /// the bytes it already holds (the writer hashes them first).
    pub(crate) fn open(&mut self, file: &Id) -> std::io::Result<u64> {
        fs::create_dir_all(self.dir.join(".partial"))?;
        let partial = self.partial(file);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&partial)?;
        let have = f.metadata()?.len();
        let (cmd_tx, cmd_rx) = std_mpsc::channel();
        let (id, dir, tx) = (*file, self.dir.clone(), self.tx.clone());
        std::thread::Builder::new()
            .name("sotto-p2p-write".into())
            .spawn(move || {
                if let Err(e) = write_worker(id, f, have, &partial, &dir, cmd_rx, &tx) {
                    tracing::warn!(file = %hex::encode(id), error = %e, "cannot write a received file");
                    let _ = tx.send(DiskMsg::Failed { file: id });
                }
            })?;
        self.writers.insert(*file, cmd_tx);
        Ok(have)
    }

    pub(crate) fn write(&mut self, file: &Id, offset: u64, data: Vec<u8>) {
        self.send_to_writer(file, WriteCmd::Write { offset, data });
    }

    /// Checks the partial copy (hashed while written) against `sha256`;
    /// the answer is a [`DiskMsg::Checked`].
    pub(crate) fn check(&mut self, file: &Id, name: String, sha256: [u8; 32]) {
        self.send_to_writer(file, WriteCmd::Check { name, sha256 });
        self.writers.remove(file);
    }

    fn send_to_writer(&mut self, file: &Id, cmd: WriteCmd) {
        let sent = self.writers.get(file).map(|w| w.send(cmd).is_ok());
        if sent != Some(true) {
            let _ = self.tx.send(DiskMsg::Failed { file: *file });
        }
    }

    pub(crate) fn discard(&mut self, file: &Id) {
        match self.writers.remove(file) {
            Some(w) if w.send(WriteCmd::Discard).is_ok() => {}
            _ => {
                let _ = fs::remove_file(self.partial(file));
            }
        }
    }

    /// Starts the reader of an offered file of `size` bytes.
    pub(crate) fn add_source(&mut self, file: Id, f: File, size: u64) -> std::io::Result<()> {
        let (cmd_tx, cmd_rx) = std_mpsc::channel();
        let tx = self.tx.clone();
        std::thread::Builder::new()
            .name("sotto-p2p-read".into())
            .spawn(move || {
                if let Err(e) = read_worker(file, f, size, cmd_rx, &tx) {
                    tracing::warn!(file = %hex::encode(file), error = %e, "cannot read a file being sent");
                    let _ = tx.send(DiskMsg::Failed { file });
                }
            })?;
        self.readers.insert(file, cmd_tx);
        Ok(())
    }

    pub(crate) fn read(&mut self, file: &Id, offset: u64, len: usize) {
        let sent = self
            .readers
            .get(file)
            .map(|r| r.send((offset, len)).is_ok());
        if sent != Some(true) {
            let _ = self.tx.send(DiskMsg::Failed { file: *file });
        }
    }

    /// The transfer ended: its reader stops once its channel is dropped.
    pub(crate) fn release(&mut self, file: &Id) {
        self.readers.remove(file);
    }
}

/// The receiver's worker: writes in order, hashing as it writes, then
/// checks, syncs and renames, or deletes the partial copy.
fn write_worker(
    file: Id,
    mut f: File,
    have: u64,
    partial: &Path,
    dir: &Path,
    cmds: std_mpsc::Receiver<WriteCmd>,
    tx: &mpsc::UnboundedSender<DiskMsg>,
) -> std::io::Result<()> {
    let mut h = Sha256::new();
    // A partial copy left by an earlier run: its bytes are hashed once.
    if hash_prefix(&mut f, &mut h, have)? != have {
        return Err(std::io::Error::other("the partial copy shrank"));
    }
    let mut pos = have;
    while let Ok(cmd) = cmds.recv() {
        match cmd {
            WriteCmd::Write { offset, data } => {
                if offset != pos {
                    return Err(std::io::Error::other("a write out of order"));
                }
                f.write_all(&data)?;
                h.update(&data);
                pos += data.len() as u64;
                let _ = tx.send(DiskMsg::Written { file, upto: pos });
            }
            WriteCmd::Check { name, sha256 } => {
                let got: [u8; 32] = h.finalize().into();
                let saved = if bool::from(got.ct_eq(&sha256)) {
                    f.sync_all()?;
                    drop(f);
                    let target = free_name(dir, &name);
                    fs::rename(partial, &target)?;
                    Some(target)
                } else {
                    drop(f);
                    let _ = fs::remove_file(partial);
                    None
                };
                let _ = tx.send(DiskMsg::Checked { file, saved });
                return Ok(());
            }
            WriteCmd::Discard => {
                drop(f);
                let _ = fs::remove_file(partial);
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The sender's worker: serves reads and hashes the file in order as it
/// goes (bytes a read skips are read for the hash alone; bytes read again
/// after a resume are not hashed twice).
fn read_worker(
    file: Id,
    mut f: File,
    size: u64,
    cmds: std_mpsc::Receiver<(u64, usize)>,
    tx: &mpsc::UnboundedSender<DiskMsg>,
) -> std::io::Result<()> {
    let mut h = Sha256::new();
    let mut hashed = 0u64;
    let mut pos = 0u64;
    let mut hash_sent = false;
    while let Ok((offset, len)) = cmds.recv() {
        if offset.saturating_add(len as u64) > size {
            return Err(std::io::Error::other("a read past the end of the file"));
        }
        if hashed < offset {
            f.seek(SeekFrom::Start(hashed))?;
            if hash_prefix(&mut f, &mut h, offset - hashed)? != offset - hashed {
                return Err(std::io::Error::other("the file shrank"));
            }
            hashed = offset;
            pos = offset;
        }
        if pos != offset {
            f.seek(SeekFrom::Start(offset))?;
        }
        // Read into spare capacity: no zeroing of a buffer about to be filled.
        let mut data = Vec::with_capacity(len);
        (&mut f).take(len as u64).read_to_end(&mut data)?;
        if data.len() != len {
            return Err(std::io::Error::other("the file shrank"));
        }
        pos = offset + len as u64;
        if hashed < pos {
            h.update(&data[(hashed - offset) as usize..]);
            hashed = pos;
        }
        if len > 0 {
            let _ = tx.send(DiskMsg::Data { file, offset, data });
        }
        if hashed == size && !hash_sent {
            hash_sent = true;
            let sha256 = std::mem::take(&mut h).finalize().into();
            let _ = tx.send(DiskMsg::Hashed { file, sha256 });
        }
    }
    Ok(())
}

/// `name`, or `name (1)`, `name (2)`, ... whichever does not exist yet.
fn free_name(dir: &Path, name: &str) -> PathBuf {
    let first = dir.join(name);
    if !first.exists() {
        return first;
    }
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    (1..)
        .map(|n| dir.join(format!("{stem} ({n}){ext}")))
        .find(|p| !p.exists())
        .expect("some name is free")
}
