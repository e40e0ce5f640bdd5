//! The files a node reads and writes for its transfers: partial copies in
//! `<files>/.partial/<file id>`, made visible in `<files>/` only after the
//! whole file matched the offered SHA-256.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::wire::Id;

pub(crate) struct Disk {
    dir: PathBuf,
    writing: HashMap<Id, File>,
    reading: HashMap<Id, File>,
}

/// SHA-256 and length of a file, read in 1 MiB blocks.
pub fn hash_file(path: &Path) -> std::io::Result<(u64, [u8; 32])> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok((len, h.finalize().into()));
        }
        len += n as u64;
        h.update(&buf[..n]);
    }
}

impl Disk {
    pub(crate) fn new(dir: PathBuf) -> Disk {
        Disk {
            dir,
            writing: HashMap::new(),
            reading: HashMap::new(),
        }
    }

    fn partial(&self, file: &Id) -> PathBuf {
        self.dir.join(".partial").join(hex::encode(file))
    }

    /// Opens (or creates) the partial copy; returns the bytes it holds.
    pub(crate) fn open(&mut self, file: &Id) -> std::io::Result<u64> {
        fs::create_dir_all(self.dir.join(".partial"))?;
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(self.partial(file))?;
        let have = f.metadata()?.len();
        self.writing.insert(*file, f);
        Ok(have)
    }

    pub(crate) fn write(&mut self, file: &Id, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let f = self
            .writing
            .get_mut(file)
            .ok_or_else(|| std::io::Error::other("file not open"))?;
        f.seek(SeekFrom::Start(offset))?;
        f.write_all(data)
    }

    /// Checks the partial copy against `sha256`; on a match moves it to a
    /// free name in the files directory and returns that path.
    pub(crate) fn check(
        &mut self,
        file: &Id,
        name: &str,
        sha256: &[u8; 32],
    ) -> std::io::Result<Option<PathBuf>> {
        if let Some(f) = self.writing.remove(file) {
            f.sync_all()?;
        }
        let partial = self.partial(file);
        let (_, got) = hash_file(&partial)?;
        if !bool::from(got.ct_eq(sha256)) {
            let _ = fs::remove_file(&partial);
            return Ok(None);
        }
        let target = free_name(&self.dir, name);
        fs::rename(&partial, &target)?;
        Ok(Some(target))
    }

    pub(crate) fn discard(&mut self, file: &Id) {
        self.writing.remove(file);
        let _ = fs::remove_file(self.partial(file));
    }

    pub(crate) fn add_source(&mut self, file: Id, f: File) {
        self.reading.insert(file, f);
    }

    pub(crate) fn read(&mut self, file: &Id, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let f = self
            .reading
            .get_mut(file)
            .ok_or_else(|| std::io::Error::other("file not open"))?;
        f.seek(SeekFrom::Start(offset))?;
        let mut buf = vec![0u8; len];
        f.read_exact(&mut buf)?;
        Ok(buf)
    }

    pub(crate) fn release(&mut self, file: &Id) {
        self.reading.remove(file);
    }
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
