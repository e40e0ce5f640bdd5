//! The files a node reads and writes for its transfers, each on a thread
//! of its own so that disk work stays off the node's loop: partial copies
//! in `<files>/.partial/<file id>`, created empty for each offer, written in
//! order and made visible in `<files>/` (synced, then renamed) only once the
//! node has every byte of the offered size (see `node/files.rs` for why
//! that checks the whole file); sources read into buffers with room for
//! the frame's header in front, so a chunk is sealed around its bytes.
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
use std::time::SystemTime;

use tokio::sync::mpsc;

use crate::wire::{FileBytes, Id, CHUNK_FRAME_HEAD};

/// What a worker tells the node's loop.
#[derive(Debug)]
pub(crate) enum DiskMsg {
    /// Receiver: everything before `upto` is written.
    Written { file: Id, upto: u64 },
    /// Receiver: the file is complete; `saved` is where it now is (a file
    /// that could not be saved is `Failed`).
    Checked { file: Id, saved: PathBuf },
    /// Sender: bytes asked for.
    Data {
        file: Id,
        offset: u64,
        data: FileBytes,
    },
    /// Either side: the file could not be read or written.
    Failed { file: Id },
}

enum WriteCmd {
    Write { offset: u64, data: FileBytes },
    Finish { name: String, size: u64 },
    Discard,
}

/// Free space an offer must leave on the filesystem of the files
/// directory (after every transfer under way completes): a peer's file does
/// not fill the disk the device needs.
pub(crate) const FREE_RESERVE: u64 = 512 << 20;

pub(crate) struct Disk {
    dir: PathBuf,
    /// Each partial copy's writer, and its offered size (counted against
    /// the free space until it ends).
    writers: HashMap<Id, (std_mpsc::Sender<WriteCmd>, u64)>,
    readers: HashMap<Id, std_mpsc::Sender<(u64, usize)>>,
    tx: mpsc::UnboundedSender<DiskMsg>,
}

impl Disk {
    /// At node start: partial copies left by an earlier run (a crash) are
    /// deleted; none is trusted (every offer begins afresh), so none is
    /// worth the space.
    pub(crate) fn new(dir: PathBuf, tx: mpsc::UnboundedSender<DiskMsg>) -> Disk {
        if let Ok(entries) = fs::read_dir(dir.join(".partial")) {
            for entry in entries.flatten() {
                if let Err(e) = fs::remove_file(entry.path()) {
                    tracing::warn!(path = %entry.path().display(), error = %e, "cannot delete a stale partial copy");
                }
            }
        }
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

    /// Creates the partial copy, empty (one left by an earlier run under
    /// the same file id is truncated: its bytes were not received in this
    /// transfer), and starts its writer. Refuses a file of `size` bytes
    /// that, with the transfers under way, would leave less than
    /// [`FREE_RESERVE`] free.
    pub(crate) fn open(&mut self, file: &Id, size: u64) -> std::io::Result<()> {
        fs::create_dir_all(self.dir.join(".partial"))?;
        let pending: u64 = self.writers.values().map(|(_, size)| size).sum();
        let free = free_space(&self.dir)?;
        let needed = size.saturating_add(pending).saturating_add(FREE_RESERVE);
        if free < needed {
            return Err(std::io::Error::other(format!(
                "not enough free space: {size} bytes offered, {free} free, {pending} promised to other transfers, {FREE_RESERVE} kept free"
            )));
        }
        let partial = self.partial(file);
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&partial)?;
        let (cmd_tx, cmd_rx) = std_mpsc::channel();
        let (id, dir, tx) = (*file, self.dir.clone(), self.tx.clone());
        std::thread::Builder::new()
            .name("sotto-p2p-write".into())
            .spawn(move || {
                if let Err(e) = write_worker(id, f, &partial, &dir, cmd_rx, &tx) {
                    tracing::warn!(file = %hex::encode(id), error = %e, "cannot write a received file");
                    let _ = fs::remove_file(&partial);
                    let _ = tx.send(DiskMsg::Failed { file: id });
                }
            })?;
        self.writers.insert(*file, (cmd_tx, size));
        Ok(())
    }

    pub(crate) fn write(&mut self, file: &Id, offset: u64, data: FileBytes) {
        self.send_to_writer(file, WriteCmd::Write { offset, data });
    }

    /// After the writes already queued, syncs the partial copy and makes it
    /// visible as `name`; the answer is a [`DiskMsg::Checked`].
    pub(crate) fn finish(&mut self, file: &Id, name: String) {
        let size = self.writers.get(file).map_or(u64::MAX, |(_, size)| *size);
        self.send_to_writer(file, WriteCmd::Finish { name, size });
    }

    /// The check's answer came: the writer has ended.
    pub(crate) fn checked(&mut self, file: &Id) {
        self.writers.remove(file);
    }

    fn send_to_writer(&mut self, file: &Id, cmd: WriteCmd) {
        let writer = self.writers.get(file).map(|(w, _)| w);
        send_or_fail(writer, cmd, file, &self.tx);
    }

    /// Deletes the partial copy through its writer, after the commands
    /// queued before (a finish under way is not raced: the writer, having
    /// finished or failed, has left no partial copy).
    pub(crate) fn discard(&mut self, file: &Id) {
        match self.writers.remove(file) {
            // A writer that has ended drops the command: it left nothing.
            Some((w, _)) => {
                let _ = w.send(WriteCmd::Discard);
            }
            None => {
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
        send_or_fail(self.readers.get(file), (offset, len), file, &self.tx);
    }

    /// The transfer ended: its reader stops once its channel is dropped.
    pub(crate) fn release(&mut self, file: &Id) {
        self.readers.remove(file);
    }
}

/// Hands `cmd` to a file's worker; with no worker, or one that has ended,
/// the transfer fails.
fn send_or_fail<T>(
    worker: Option<&std_mpsc::Sender<T>>,
    cmd: T,
    file: &Id,
    tx: &mpsc::UnboundedSender<DiskMsg>,
) {
    if worker.is_none_or(|w| w.send(cmd).is_err()) {
        let _ = tx.send(DiskMsg::Failed { file: *file });
    }
}

/// Bytes available to this user on the filesystem of `dir` (statvfs).
fn free_space(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("a files directory with a NUL byte"))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string that outlives the call;
    // `st` is written by statvfs when it returns 0 and read only then.
    let st = unsafe {
        if libc::statvfs(path.as_ptr(), st.as_mut_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        st.assume_init()
    };
    #[allow(clippy::unnecessary_cast)] // the field types vary by platform
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// The receiver's worker: writes in order, then syncs and renames, or
/// deletes the partial copy.
fn write_worker(
    file: Id,
    mut f: File,
    partial: &Path,
    dir: &Path,
    cmds: std_mpsc::Receiver<WriteCmd>,
    tx: &mpsc::UnboundedSender<DiskMsg>,
) -> std::io::Result<()> {
    let mut pos = 0u64;
    while let Ok(cmd) = cmds.recv() {
        match cmd {
            WriteCmd::Write { offset, data } => {
                if offset != pos {
                    return Err(std::io::Error::other("a write out of order"));
                }
                f.write_all(&data)?;
                pos += data.len() as u64;
                let _ = tx.send(DiskMsg::Written { file, upto: pos });
            }
            WriteCmd::Finish { name, size } => {
                if pos != size {
                    return Err(std::io::Error::other(format!(
                        "finished at {pos} bytes of {size} offered"
                    )));
                }
                f.sync_all()?;
                drop(f);
                let target = save_as_free_name(partial, dir, &name)?;
                let _ = tx.send(DiskMsg::Checked {
                    file,
                    saved: target,
                });
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

/// What identifies a version of a source file: its length, mtime, ctime
/// (which a write moves and no one can set back, unlike the mtime) and
/// inode.
type Version = (u64, Option<SystemTime>, (i64, i64), (u64, u64));

fn version(f: &File) -> std::io::Result<Version> {
    use std::os::unix::fs::MetadataExt;
    let m = f.metadata()?;
    Ok((
        m.len(),
        m.modified().ok(),
        (m.ctime(), m.ctime_nsec()),
        (m.dev(), m.ino()),
    ))
}

/// The sender's worker: serves reads, each into a buffer with room for the
/// frame's header in front. A source that changes while it is sent (its
/// length, mtime or ctime moves) fails the transfer rather than mixing
/// versions.
fn read_worker(
    file: Id,
    mut f: File,
    size: u64,
    cmds: std_mpsc::Receiver<(u64, usize)>,
    tx: &mpsc::UnboundedSender<DiskMsg>,
) -> std::io::Result<()> {
    let first = version(&f)?;
    if first.0 != size {
        return Err(std::io::Error::other("the file changed while being sent"));
    }
    let mut pos = 0u64;
    while let Ok((offset, len)) = cmds.recv() {
        if offset.saturating_add(len as u64) > size {
            return Err(std::io::Error::other("a read past the end of the file"));
        }
        if pos != offset {
            f.seek(SeekFrom::Start(offset))?;
        }
        // Room for the frame's header, the bytes, the AEAD tag; read into
        // spare capacity (no zeroing of a buffer about to be filled).
        let mut buf = Vec::with_capacity(CHUNK_FRAME_HEAD + len + 16);
        buf.resize(CHUNK_FRAME_HEAD, 0);
        (&mut f).take(len as u64).read_to_end(&mut buf)?;
        if buf.len() != CHUNK_FRAME_HEAD + len || version(&f)? != first {
            return Err(std::io::Error::other("the file changed while being sent"));
        }
        pos = offset + len as u64;
        let data = FileBytes::new(buf, CHUNK_FRAME_HEAD);
        let _ = tx.send(DiskMsg::Data { file, offset, data });
    }
    Ok(())
}

/// Makes `partial` visible as `name`, or `name (1)`, `name (2)`, ...
/// whichever does not exist yet. The name is taken atomically (a hard
/// link fails if it exists; where hard links are not supported, an
/// exclusive create reserves it before the rename), so two files of the
/// same name finishing together never overwrite each other, nor an
/// existing file.
fn save_as_free_name(partial: &Path, dir: &Path, name: &str) -> std::io::Result<PathBuf> {
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    for n in 0..10_000u32 {
        let target = if n == 0 {
            dir.join(name)
        } else {
            dir.join(format!("{stem} ({n}){ext}"))
        };
        match fs::hard_link(partial, &target) {
            Ok(()) => {
                if let Err(e) = fs::remove_file(partial) {
                    tracing::warn!(path = %partial.display(), error = %e, "cannot delete a partial copy");
                }
                return Ok(target);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(_) => match OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&target)
            {
                Ok(_) => {
                    fs::rename(partial, &target)?;
                    return Ok(target);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            },
        }
    }
    Err(std::io::Error::other(format!("no free name for {name}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(rx: &mut mpsc::UnboundedReceiver<DiskMsg>) -> DiskMsg {
        rx.blocking_recv().expect("a worker message")
    }

    #[test]
    fn a_partial_copy_from_an_earlier_run_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut disk = Disk::new(dir.path().to_path_buf(), tx);
        let id = [9u8; 16];
        fs::create_dir_all(dir.path().join(".partial")).unwrap();
        fs::write(disk.partial(&id), b"stale bytes from another transfer").unwrap();
        disk.open(&id, 3).unwrap();
        assert_eq!(
            fs::metadata(disk.partial(&id)).unwrap().len(),
            0,
            "begun afresh"
        );
        disk.write(&id, 0, FileBytes::new(b"..new".to_vec(), 2));
        assert!(matches!(recv(&mut rx), DiskMsg::Written { upto: 3, .. }));
        disk.finish(&id, "f.txt".into());
        let DiskMsg::Checked { saved: path, .. } = recv(&mut rx) else {
            panic!("saved");
        };
        assert_eq!(fs::read(path).unwrap(), b"new");
        assert!(!disk.partial(&id).exists());
    }

    #[test]
    fn an_offer_that_would_fill_the_disk_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, _rx) = mpsc::unbounded_channel();
        let mut disk = Disk::new(dir.path().to_path_buf(), tx);
        let free = free_space(dir.path()).unwrap();
        assert!(free > 0);
        let e = disk.open(&[1u8; 16], free).unwrap_err();
        assert!(e.to_string().contains("not enough free space"), "{e}");
        assert!(!disk.partial(&[1u8; 16]).exists());
        if free > 2 * FREE_RESERVE + 4096 {
            // Fits alone, but not beside another transfer of that size.
            let half = free - FREE_RESERVE - 4096;
            disk.open(&[2u8; 16], half).unwrap();
            assert!(disk.open(&[3u8; 16], half).is_err());
            disk.discard(&[2u8; 16]);
            disk.open(&[3u8; 16], half).unwrap();
        }
    }

    /// Files of the same name finishing together each get a name of their
    /// own; an existing file is not overwritten.
    #[test]
    fn files_of_the_same_name_finishing_together_keep_their_own_bytes() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("same.txt"), b"already here").unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut disk = Disk::new(dir.path().to_path_buf(), tx);
        let n = 24u8;
        for i in 0..n {
            disk.open(&[i; 16], 1).unwrap();
            disk.write(&[i; 16], 0, FileBytes::new(vec![i], 0));
        }
        for _ in 0..n {
            assert!(matches!(recv(&mut rx), DiskMsg::Written { .. }));
        }
        for i in 0..n {
            disk.finish(&[i; 16], "same.txt".into());
        }
        let mut saved = HashMap::new();
        for _ in 0..n {
            let DiskMsg::Checked { file, saved: path } = recv(&mut rx) else {
                panic!("saved");
            };
            saved.insert(path, file[0]);
        }
        assert_eq!(saved.len(), n as usize, "a name each");
        for (path, i) in saved {
            assert_eq!(fs::read(path).unwrap(), vec![i]);
        }
        assert_eq!(
            fs::read(dir.path().join("same.txt")).unwrap(),
            b"already here"
        );
        assert_eq!(
            fs::read_dir(dir.path().join(".partial")).unwrap().count(),
            0
        );
    }

    #[test]
    fn a_finish_short_of_the_offered_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut disk = Disk::new(dir.path().to_path_buf(), tx);
        let id = [3u8; 16];
        disk.open(&id, 10).unwrap();
        disk.write(&id, 0, FileBytes::new(b"short".to_vec(), 0));
        assert!(matches!(recv(&mut rx), DiskMsg::Written { upto: 5, .. }));
        disk.finish(&id, "short.txt".into());
        assert!(matches!(recv(&mut rx), DiskMsg::Failed { file } if file == id));
        assert!(!dir.path().join("short.txt").exists());
        assert!(!disk.partial(&id).exists());
    }

    #[test]
    fn partial_copies_from_an_earlier_run_are_deleted_at_start() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join(".partial")).unwrap();
        let stale = dir.path().join(".partial").join("00ff");
        fs::write(&stale, b"left by a crash").unwrap();
        fs::write(dir.path().join("kept.txt"), b"a received file").unwrap();
        let (tx, _rx) = mpsc::unbounded_channel();
        let _disk = Disk::new(dir.path().to_path_buf(), tx);
        assert!(!stale.exists());
        assert!(dir.path().join("kept.txt").exists());
    }

    #[test]
    fn a_source_that_changes_while_sent_fails_the_transfer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("src.bin");
        fs::write(&path, vec![1u8; 1000]).unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut disk = Disk::new(dir.path().join("in"), tx);
        let id = [4u8; 16];
        disk.add_source(id, File::open(&path).unwrap(), 1000)
            .unwrap();
        disk.read(&id, 0, 500);
        let DiskMsg::Data {
            offset: 0, data, ..
        } = recv(&mut rx)
        else {
            panic!("data");
        };
        assert_eq!(&data[..], &[1u8; 500][..]);
        assert_eq!(data.clone().into_parts().1, CHUNK_FRAME_HEAD);
        // Appended to (length moves) while being sent.
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"more")
            .unwrap();
        disk.read(&id, 500, 500);
        assert!(matches!(recv(&mut rx), DiskMsg::Failed { file } if file == id));
    }

    /// Rewritten in place with the same length and its mtime set back:
    /// the ctime still moves, so the transfer fails rather than splicing
    /// two versions.
    #[test]
    fn a_source_rewritten_with_its_length_and_mtime_kept_fails_the_transfer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("src.bin");
        fs::write(&path, vec![1u8; 1000]).unwrap();
        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut disk = Disk::new(dir.path().join("in"), tx);
        let id = [5u8; 16];
        disk.add_source(id, File::open(&path).unwrap(), 1000)
            .unwrap();
        disk.read(&id, 0, 500);
        assert!(matches!(recv(&mut rx), DiskMsg::Data { offset: 0, .. }));
        std::thread::sleep(std::time::Duration::from_millis(20));
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        (&f).write_all(&[2u8; 1000]).unwrap();
        f.set_modified(mtime).unwrap();
        drop(f);
        let m = fs::metadata(&path).unwrap();
        assert_eq!((m.len(), m.modified().unwrap()), (1000, mtime));
        disk.read(&id, 500, 500);
        assert!(matches!(recv(&mut rx), DiskMsg::Failed { file } if file == id));
    }
}
