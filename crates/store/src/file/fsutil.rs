//! Durable file operations shared by the file repositories.

use std::fs::{self, File, TryLockError};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use mailroom_mailet::{BodySource, MAX_HEADER_SECTION};

use super::group_commit::GroupCommit;

/// An exclusive `flock` on a lock file, released when dropped (or when the process dies).
#[derive(Debug)]
pub struct FileLock {
    /// The open lock file: closing it releases the lock.
    _file: File,
}

/// Takes the exclusive lock of the lock file `path` (created empty if absent) without
/// waiting. `Ok(None)` when someone else holds it: another process, or another open of the
/// same file in this one (`flock` locks belong to the open file, not to the process).
pub fn try_lock(path: &Path) -> io::Result<Option<FileLock>> {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    // std's try_lock is flock(LOCK_EX | LOCK_NB) on Linux.
    match file.try_lock() {
        Ok(()) => Ok(Some(FileLock { _file: file })),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// Fsyncs a directory so that renames and unlinks in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The octets an unprivileged writer may still allocate on the file system of `path`.
pub fn free_space(path: &Path) -> io::Result<u64> {
    let stat = rustix::fs::statvfs(path)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Fails with [`io::ErrorKind::StorageFull`] when the file system of `dir` has less than
/// `reserve` octets free beside a message of `size` octets that a client announced.
pub fn check_room(dir: &Path, reserve: u64, size: u64) -> io::Result<()> {
    let free = free_space(dir)?;
    if free < reserve.saturating_add(size) {
        return Err(io::Error::new(
            io::ErrorKind::StorageFull,
            format!(
                "{} KiB free on the file system of {}: no room for a message of {} KiB \
                 beside the {} KiB kept in reserve",
                free / 1024,
                dir.display(),
                size.div_ceil(1024),
                reserve / 1024
            ),
        ));
    }
    Ok(())
}

/// Fails with [`io::ErrorKind::StorageFull`] when the file system of `dir` has less than
/// `reserve` octets free: new mail is refused (SMTP `452 4.3.1`) while the space left serves
/// mails already accepted (their hops, removals and deliveries).
pub fn check_reserve(dir: &Path, reserve: u64) -> io::Result<()> {
    let free = free_space(dir)?;
    if free < reserve {
        return Err(io::Error::new(
            io::ErrorKind::StorageFull,
            format!(
                "{} KiB free on the file system of {}, less than the {} KiB kept in reserve",
                free / 1024,
                dir.display(),
                reserve / 1024
            ),
        ));
    }
    Ok(())
}

/// Creates a directory and its parents, fsyncing each parent that gained an entry.
pub fn create_dir_durable(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_durable(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically: temporary file in `tmp_dir`, fsync, rename. The caller
/// fsyncs the target directory (once, after all its renames).
pub fn write_atomic(tmp_dir: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = tmp_dir.join(format!(
        "{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        unique_suffix()
    ));
    let mut file = File::create(&tmp)?;
    let result = file
        .write_all(bytes)
        .and_then(|_| file.sync_all())
        .and_then(|_| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A suffix that differs between threads and calls, for temporary file names.
pub fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        crate::names::pid(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A message body that is a byte range of an open file. Holding the file open keeps the bytes
/// readable even when the repository renames a new version over the path or removes it.
#[derive(Debug)]
pub struct FileBody {
    file: Arc<File>,
    offset: u64,
    len: u64,
}

impl FileBody {
    /// The body at `offset..offset + len` of `file`.
    pub(crate) fn new(file: Arc<File>, offset: u64, len: u64) -> FileBody {
        FileBody { file, offset, len }
    }
}

impl BodySource for FileBody {
    fn len(&self) -> u64 {
        self.len
    }

    fn open(&self) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(FileRangeReader {
            file: self.file.clone(),
            pos: self.offset,
            end: self.offset + self.len,
        }))
    }
}

/// Reads a byte range of a shared file with positional reads, so readers do not disturb each
/// other.
struct FileRangeReader {
    file: Arc<File>,
    pos: u64,
    end: u64,
}

impl Read for FileRangeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min((self.end - self.pos) as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// A message stored in the first `len` octets of `file`: reads its header section into memory
/// and leaves the body in the file.
pub fn open_message(file: File, len: u64) -> io::Result<mailroom_mailet::Message> {
    open_message_at(Arc::new(file), 0, len)
}

/// A message stored in `file` at `offset..offset + len`: reads its header section into memory
/// and leaves the body in the file.
pub fn open_message_at(
    file: Arc<File>,
    offset: u64,
    len: u64,
) -> io::Result<mailroom_mailet::Message> {
    let mut head = vec![0u8; (len as usize).min(MAX_HEADER_SECTION + 4096)];
    let mut filled = 0;
    while filled < head.len() {
        match file.read_at(&mut head[filled..], offset + filled as u64)? {
            0 => break,
            n => filled += n,
        }
    }
    head.truncate(filled);
    let split = mailroom_mailet::header_section_len(&head);
    head.truncate(split);
    let body = FileBody {
        file,
        offset: offset + split as u64,
        len: len.saturating_sub(split as u64),
    };
    Ok(mailroom_mailet::Message::new(head, Arc::new(body)))
}

/// Group commit of a directory's fsync: makes the renames done in a directory durable, sharing
/// one `fsync` between every caller that asked while another was running.
///
/// With many SMTP sessions committing at once, each waits for at most one fsync that started
/// after its rename, instead of queueing one fsync each. A failed directory fsync poisons the
/// syncer: after such a failure the kernel's view of what is on disk cannot be trusted, so every
/// later call fails too and nothing more is acknowledged.
#[derive(Debug)]
pub struct DirSync {
    dir: File,
    commits: GroupCommit<()>,
}

impl DirSync {
    /// A syncer for `dir` (kept open).
    pub fn open(dir: &Path) -> io::Result<DirSync> {
        Ok(DirSync {
            dir: File::open(dir)?,
            commits: GroupCommit::new((), "directory fsync"),
        })
    }

    /// Returns once everything done in the directory before the call is durable.
    pub fn sync(&self) -> io::Result<()> {
        self.wait(self.ticket())
    }

    /// A ticket for what has been done in the directory so far. Taking it right after a
    /// rename and waiting only after other work (the file's own fsync) lets more renames share
    /// one directory fsync.
    pub fn ticket(&self) -> u64 {
        self.commits.add(|()| ())
    }

    /// Returns once everything done before `ticket` was taken is durable.
    pub fn wait(&self, ticket: u64) -> io::Result<()> {
        self.commits.wait(
            ticket,
            std::time::Duration::ZERO,
            |()| (),
            |()| Ok(self.dir.sync_all()?),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn try_lock_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let held = try_lock(&path).unwrap().expect("a free lock is taken");
        // A second open file, even in the same process, does not get it.
        assert!(try_lock(&path).unwrap().is_none());
        drop(held);
        assert!(try_lock(&path).unwrap().is_some());
        // A missing directory is an error, not "in use".
        assert!(try_lock(&dir.path().join("missing/lock")).is_err());
    }
}
