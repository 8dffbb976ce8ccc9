//! The IO a [`Storage`](crate::Storage) needs, over named files in one
//! directory, and the std `fs` backend.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use crate::format::SECTOR_SIZE;

/// Blocking file IO over the files of one data directory. Names are plain
/// file names (no separators).
///
/// Durability contract (what [`Storage`](crate::Storage) relies on):
/// bytes written are durable only after [`Backend::sync`] of their file;
/// a file's creation or removal is durable only after
/// [`Backend::sync_dir`]; a write may be torn at a crash, and writes not
/// yet synced may be lost in any combination.
pub trait Backend {
    /// The names of the files in the directory.
    fn list(&mut self) -> io::Result<Vec<String>>;
    /// The file's length in bytes.
    fn len(&mut self, name: &str) -> io::Result<u64>;
    /// Reads into `buf` from `offset`; returns the bytes read, fewer than
    /// `buf.len()` only at the end of the file.
    fn read_at(&mut self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes all of `data` at `offset`, creating the file if missing.
    fn write_at(&mut self, name: &str, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Makes the file's written bytes and its length durable (`fdatasync`).
    fn sync(&mut self, name: &str) -> io::Result<()>;
    /// Sets the file's length.
    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()>;
    /// Removes the file; a missing file is not an error.
    fn remove(&mut self, name: &str) -> io::Result<()>;
    /// Renames `from` to `to`, replacing `to` if it exists (atomically, as
    /// `rename(2)`); durable after [`Backend::sync_dir`].
    fn rename(&mut self, from: &str, to: &str) -> io::Result<()>;
    /// Makes creations and removals durable (`fsync` of the directory).
    fn sync_dir(&mut self) -> io::Result<()>;
}

/// `EIO`: the device could not read (or write) the sectors asked for. The
/// same number on Linux and the BSDs.
pub const EIO: i32 = 5;

/// Whether `error` is a device's read error (`EIO`): damage of the sectors
/// read, to be treated like corrupt bytes, unlike any other error.
pub fn is_media_error(error: &io::Error) -> bool {
    error.raw_os_error() == Some(EIO)
}

fn read_full<B: Backend + ?Sized>(
    backend: &mut B,
    name: &str,
    offset: u64,
    buf: &mut [u8],
) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let n = backend.read_at(name, offset + done as u64, &mut buf[done..])?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

/// Bytes read per call while reading a file whole.
const READ_CHUNK_BYTES: usize = 1 << 20;

/// A file read whole (or its first `max` bytes), with the sectors the
/// device could not read (`EIO`) as zeros: the scan then sees them as
/// damage and names what they held. Any other error is returned.
pub(crate) struct ReadBack {
    pub bytes: Vec<u8>,
    pub sectors_unreadable: u64,
}

pub(crate) fn read_file<B: Backend + ?Sized>(
    backend: &mut B,
    name: &str,
    max: u64,
) -> io::Result<ReadBack> {
    let len = backend.len(name)?.min(max) as usize;
    let mut bytes = vec![0u8; len];
    let mut sectors_unreadable = 0;
    let mut at = 0;
    while at < len {
        let end = (at + READ_CHUNK_BYTES).min(len);
        match read_full(backend, name, at as u64, &mut bytes[at..end]) {
            Ok(n) if n < end - at => {
                // The file shrank under us: what is there is all there is.
                bytes.truncate(at + n);
                break;
            }
            Ok(_) => {}
            Err(e) if is_media_error(&e) => {
                // Again sector by sector: only the failing sectors are lost.
                let mut sector = at;
                while sector < end {
                    let sector_end = (sector + SECTOR_SIZE).min(end);
                    match read_full(backend, name, sector as u64, &mut bytes[sector..sector_end]) {
                        Ok(_) => {}
                        Err(e) if is_media_error(&e) => {
                            bytes[sector..sector_end].fill(0);
                            sectors_unreadable += 1;
                        }
                        Err(e) => return Err(e),
                    }
                    sector = sector_end;
                }
            }
            Err(e) => return Err(e),
        }
        at = end;
    }
    Ok(ReadBack {
        bytes,
        sectors_unreadable,
    })
}

/// The std backend: `pwrite`, `pread`, `fdatasync` (`File::sync_data`),
/// and `fsync` of the directory after creations and removals.
///
/// Writes go through the page cache: [`Storage`](crate::Storage)'s sectors
/// are aligned for O_DIRECT, but this backend does not ask for it (the
/// glommio adapter's DMA files are where O_DIRECT belongs).
#[derive(Debug)]
pub struct FsBackend {
    dir: PathBuf,
    files: HashMap<String, File>,
}

impl FsBackend {
    /// The backend over directory `dir`, created (with its parents) if
    /// missing. Creating it formats nothing: see
    /// [`Storage::format`](crate::Storage::format).
    pub fn new(dir: impl AsRef<Path>) -> io::Result<FsBackend> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir)?;
            // The new directory's own entry must be durable too, or a
            // formatted directory could vanish at a power loss.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                File::open(parent)?.sync_all()?;
            }
        }
        Ok(FsBackend {
            dir,
            files: HashMap::new(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&mut self, name: &str, create: bool) -> io::Result<&File> {
        if !self.files.contains_key(name) {
            if name.contains('/') || name.is_empty() {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad file name"));
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(create)
                .truncate(false)
                .open(self.dir.join(name))?;
            self.files.insert(name.to_string(), file);
        }
        Ok(&self.files[name])
    }
}

#[cfg(unix)]
impl Backend for FsBackend {
    fn list(&mut self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                if let Ok(name) = entry.file_name().into_string() {
                    names.push(name);
                }
            }
        }
        names.sort();
        Ok(names)
    }

    fn len(&mut self, name: &str) -> io::Result<u64> {
        Ok(self.file(name, false)?.metadata()?.len())
    }

    fn read_at(&mut self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let file = self.file(name, false)?;
        let mut done = 0;
        while done < buf.len() {
            match file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    fn write_at(&mut self, name: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file(name, true)?.write_all_at(data, offset)
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        self.file(name, false)?.sync_data()
    }

    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        self.file(name, false)?.set_len(len)
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.files.remove(name);
        match std::fs::remove_file(self.dir.join(name)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        self.files.remove(from);
        self.files.remove(to);
        std::fs::rename(self.dir.join(from), self.dir.join(to))
    }

    fn sync_dir(&mut self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
}
