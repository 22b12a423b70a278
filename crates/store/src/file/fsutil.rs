//! Durable file operations shared by the file repositories.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use mailroom_mailet::{BodySource, MAX_HEADER_SECTION};

/// Fsyncs a directory so that renames and unlinks in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
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
        std::process::id(),
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

/// Opens a message file: reads its header section into memory and leaves the body in the file.
pub fn open_message(path: &Path) -> io::Result<mailroom_mailet::Message> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut head = vec![0u8; (len as usize).min(MAX_HEADER_SECTION + 4096)];
    let mut filled = 0;
    while filled < head.len() {
        match file.read_at(&mut head[filled..], filled as u64)? {
            0 => break,
            n => filled += n,
        }
    }
    head.truncate(filled);
    let split = mailroom_mailet::header_section_len(&head);
    head.truncate(split);
    let body = FileBody {
        file: Arc::new(file),
        offset: split as u64,
        len: len - split as u64,
    };
    Ok(mailroom_mailet::Message::new(head, Arc::new(body)))
}
