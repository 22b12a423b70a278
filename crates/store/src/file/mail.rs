//! A directory of mails, one file per mail: `<name>.mail` holds the message followed by one or
//! more envelope records; the last valid record is the envelope.
//!
//! ```text
//! [message octets][envelope JSON][trailer][envelope JSON][trailer]...
//! trailer = MAGIC (8 octets) | JSON length (u32 LE) | CRC-32 of the JSON (u32 LE)
//!           | CRC-32 of the message octets (u32 LE)
//! ```
//!
//! Why one file with appended envelopes: a processor hop (a new state) is one append and one
//! `fdatasync` of a file that already exists — no new inode, no rename — and a new mail is one
//! file. On ext4, inode allocation and directory locking, not the fsyncs, dominate the cost of
//! small mails; this keeps both to one per mail. A torn append (a crash mid-hop) leaves a
//! record whose CRC does not match; readers skip back to the previous record, which is whole.
//! The envelope's `size` is the message length, so every record also says where the message
//! ends.
//!
//! Files being written are `<name>.<n>.tmp` in the same directory, and files of removed mails
//! are recycled as `<name>.<n>.free`: truncated, then renamed back into use for the next new
//! mail. A mail server creates and deletes files at a high rate, and
//! an inode freed and allocated again costs far more than a rename (ext4 without a journal even
//! scans every recently deleted inode on each allocation); recycling keeps a busy repository
//! from allocating or freeing inodes in steady state. Every rename stays within the one directory:
//! renames across directories serialise on a filesystem-wide lock in Linux.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use mailroom_mailet::{Envelope, Mail};

use super::fsutil::{self, create_dir_durable, DirSync};
use crate::blocking::{IncomingMessage, MailRepository};
use crate::{validate_mail_name, Result, StoreError};

/// Marks the end of an envelope record. The 0xFF octets never occur in JSON text, so a backward
/// scan cannot mistake an envelope for a trailer.
const MAGIC: &[u8; 8] = b"\xffMRENV\x00\x01";
/// Length of a trailer.
const TRAILER: usize = 20;

/// How many recycled files are kept at most; beyond that, removed mails are unlinked.
const MAX_FREE_FILES: usize = 4096;

/// A mail repository in a directory. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct FileMailRepository {
    dir: PathBuf,
    /// Makes new entries durable, one shared fsync for concurrent writers.
    dir_sync: Arc<DirSync>,
    /// Names of the `.free` files waiting for reuse.
    free_files: Arc<Mutex<Vec<String>>>,
    /// Whether a mail file that is not whole is moved into `corrupt/` when read (the
    /// repository's owner, [`FileMailRepository::open`]), or only skipped (an administrator's
    /// look, [`FileMailRepository::open_existing`], which changes nothing by reading).
    quarantine: bool,
}

impl FileMailRepository {
    /// Opens (creating if needed) the repository in `dir`. Temporary files of writes that a
    /// crash cut short are removed.
    pub fn open(dir: &Path) -> Result<Self> {
        create_dir_durable(dir)?;
        let mut free_files = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if name.ends_with(".tmp") {
                // A write cut short by a crash: never acknowledged.
                let _ = fs::remove_file(entry.path());
            } else if name.ends_with(".free") {
                free_files.push(name);
            }
        }
        Ok(FileMailRepository {
            dir_sync: Arc::new(DirSync::open(dir)?),
            dir: dir.to_path_buf(),
            free_files: Arc::new(Mutex::new(free_files)),
            quarantine: true,
        })
    }

    /// Opens the repository in `dir` for an administrator (the console, `mailroom queue`):
    /// a directory that does not exist is [`StoreError::NotFound`] and is not created, and
    /// opening and reading change nothing — temporary files are left alone (they may be
    /// another process's writes in progress) and a mail file that is not whole is skipped,
    /// not moved. Removing a mail through it removes the mail's file.
    pub fn open_existing(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(StoreError::NotFound(format!(
                "repository {}",
                dir.display()
            )));
        }
        Ok(FileMailRepository {
            dir_sync: Arc::new(DirSync::open(dir)?),
            dir: dir.to_path_buf(),
            // Never recycled by this handle: the `.free` files belong to the owner's list.
            free_files: Arc::new(Mutex::new(Vec::new())),
            quarantine: false,
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.mail"))
    }

    /// Stores `mail`: a new file, or one appended record when the file holds this very message.
    fn store_mail(&self, mail: &Mail) -> Result<()> {
        validate_mail_name(mail.name())?;
        let mut envelope = mail.envelope.clone();
        envelope.size = mail.message.size();
        let path = self.path(mail.name());
        let existing = match OpenOptions::new().read(true).append(true).open(&path) {
            Ok(file) => Some(file),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        let Some(mut file) = existing else {
            self.write_whole(mail, &envelope)?;
            if let Err(e) = self.dir_sync.sync() {
                // Not durable, so not stored: leave nothing for a rescan to pick up.
                let _ = fs::remove_file(&path);
                return Err(e.into());
            }
            return Ok(());
        };
        match holds_message(&file, mail)? {
            // The file holds this very message (bodies never change, so the same size and
            // header section say so): a new envelope is one append. A torn append is
            // harmless: readers fall back to the previous record.
            Some(crc) => {
                file.write_all(&record(&envelope, crc)?)?;
                file.sync_data()?;
            }
            // Another header: a new file replaces the old one; the old or the new version
            // survives a crash, both whole, so no directory fsync is needed.
            None => {
                self.write_whole(mail, &envelope)?;
            }
        }
        Ok(())
    }

    /// The mail called `name` and the CRC-32 of its message. With `verify`, the message is read
    /// and checked against that CRC first: a mail found on disk after a crash may have been
    /// cut short while it was being committed (see [`FileIncoming::commit`]).
    pub(crate) fn retrieve_checked(&self, name: &str, verify: bool) -> Result<Option<(Mail, u32)>> {
        validate_mail_name(name)?;
        let file = match File::open(self.path(name)) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let len = file.metadata()?.len();
        let (envelope, crc) = match last_envelope(&file, len, name) {
            Ok(found) => found,
            Err(StoreError::Corrupt(_, why)) => {
                self.quarantine(name, &why)?;
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        if verify && message_crc(&file, envelope.size)? != crc {
            self.quarantine(name, "the message does not match its envelope record")?;
            return Ok(None);
        }
        let message = fsutil::open_message(file, envelope.size)?;
        Ok(Some((Mail { envelope, message }, crc)))
    }

    /// The envelope of the mail called `name` alone (its `size` is the message's): the file is
    /// read at its end and closed, and no message is opened — for listing many mails.
    pub fn envelope(&self, name: &str) -> Result<Option<Envelope>> {
        validate_mail_name(name)?;
        let file = match File::open(self.path(name)) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let len = file.metadata()?.len();
        match last_envelope(&file, len, name) {
            Ok((envelope, _)) => Ok(Some(envelope)),
            Err(StoreError::Corrupt(_, why)) => {
                self.quarantine(name, &why)?;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Moves a mail file that is not whole aside, into `corrupt/`: a commit cut short by a
    /// crash (never acknowledged), a disk error or a hand edit. It is kept for an
    /// administrator to look at rather than deleted.
    fn quarantine(&self, name: &str, why: &str) -> Result<()> {
        if !self.quarantine {
            tracing::warn!(repository = %self.dir.display(), mail = %name, why,
                "mail file is not whole; skipped");
            return Ok(());
        }
        let corrupt = self.dir.join("corrupt");
        create_dir_durable(&corrupt)?;
        tracing::error!(repository = %self.dir.display(), mail = %name, why,
            "mail file is not whole; moved to corrupt/");
        match fs::rename(self.path(name), corrupt.join(format!("{name}.mail"))) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn free_list(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.free_files.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A temporary file name for `name` in the repository directory.
    fn tmp_path(&self, name: &str) -> PathBuf {
        self.dir
            .join(format!("{name}.{}.tmp", fsutil::unique_suffix()))
    }

    /// An empty file at `tmp_path`: a recycled one when there is one, else a new one.
    fn create_tmp(&self, tmp_path: &Path) -> io::Result<File> {
        let recycled = self.free_list().pop();
        if let Some(name) = recycled {
            if fs::rename(self.dir.join(&name), tmp_path).is_ok() {
                return OpenOptions::new().write(true).truncate(true).open(tmp_path);
            }
        }
        File::create(tmp_path)
    }

    /// Starts a new mail; its file is created at the first write.
    fn start_incoming(&self) -> FileIncoming {
        let name = crate::new_mail_name();
        FileIncoming {
            repo: self.clone(),
            tmp_path: self.tmp_path(&name),
            name,
            file: None,
            closed: false,
            written: 0,
            crc: crc32fast::Hasher::new(),
        }
    }

    /// Writes a whole new file for `mail` (message and one record), fsyncs it and renames it
    /// into place. Returns the CRC-32 of the message.
    fn write_whole(&self, mail: &Mail, envelope: &Envelope) -> io::Result<u32> {
        let path = self.path(mail.name());
        let tmp = self.tmp_path(mail.name());
        let result = (|| -> io::Result<u32> {
            let mut out = CrcWriter {
                inner: BufWriter::with_capacity(64 * 1024, self.create_tmp(&tmp)?),
                crc: crc32fast::Hasher::new(),
            };
            io::copy(&mut mail.message.reader()?, &mut out)?;
            let crc = out.crc.finalize();
            out.inner.write_all(&record(envelope, crc)?)?;
            out.inner
                .into_inner()
                .map_err(|e| e.into_error())?
                .sync_all()?;
            fs::rename(&tmp, &path)?;
            Ok(crc)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

/// A writer that computes the CRC-32 of what goes through it.
struct CrcWriter<W> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The CRC-32 of the first `len` octets of `file`.
fn message_crc(file: &File, len: u64) -> io::Result<u32> {
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut pos = 0;
    while pos < len {
        let want = buf.len().min((len - pos) as usize);
        file.read_exact_at(&mut buf[..want], pos)?;
        crc.update(&buf[..want]);
        pos += want as u64;
    }
    Ok(crc.finalize())
}

/// An envelope as a record: JSON and trailer, with the CRC-32 of the message it describes.
fn record(envelope: &Envelope, message_crc: u32) -> io::Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec(envelope).map_err(io::Error::other)?;
    let len = u32::try_from(bytes.len()).map_err(|_| io::Error::other("envelope too large"))?;
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&len.to_le_bytes());
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes.extend_from_slice(&message_crc.to_le_bytes());
    Ok(bytes)
}

/// The last whole envelope record of a mail file of `len` octets that names this mail.
///
/// The usual case costs two small reads: the trailer at the end, then exactly the JSON it
/// describes. Only when that record is torn (a crash during an append) are earlier trailers
/// searched for, backwards, chunk by chunk, as far as needed.
fn last_envelope(file: &File, len: u64, name: &str) -> Result<(Envelope, u32)> {
    let mut end = len;
    while let Some(at) = previous_magic(file, end)? {
        if let Some(found) = record_at(file, at, len, name)? {
            return Ok(found);
        }
        end = at;
    }
    Err(StoreError::Corrupt(
        name.to_string(),
        "no whole envelope record".to_string(),
    ))
}

/// The envelope and message CRC of the record whose trailer starts at `at`, if it is whole
/// and names `name`.
fn record_at(file: &File, at: u64, len: u64, name: &str) -> io::Result<Option<(Envelope, u32)>> {
    if at + TRAILER as u64 > len {
        return Ok(None);
    }
    let mut trailer = [0u8; TRAILER];
    file.read_exact_at(&mut trailer, at)?;
    let json_len = u64::from(u32::from_le_bytes(
        trailer[8..12].try_into().expect("4 octets"),
    ));
    let crc = u32::from_le_bytes(trailer[12..16].try_into().expect("4 octets"));
    let message_crc = u32::from_le_bytes(trailer[16..20].try_into().expect("4 octets"));
    let Some(json_start) = at.checked_sub(json_len) else {
        return Ok(None);
    };
    let mut json = vec![0u8; json_len as usize];
    file.read_exact_at(&mut json, json_start)?;
    // A record counts only if it names this very mail: the message octets before it come from
    // clients, and mail names are unpredictable, so a record forged in a message never does,
    // even should the real records be lost.
    Ok((crc32fast::hash(&json) == crc)
        .then(|| serde_json::from_slice::<Envelope>(&json).ok())
        .flatten()
        .filter(|e| e.name == name && json_start >= e.size)
        .map(|e| (e, message_crc)))
}

/// Where the last [`MAGIC`] that starts before `end` is, reading backwards in chunks.
fn previous_magic(file: &File, end: u64) -> io::Result<Option<u64>> {
    const CHUNK: u64 = 64 * 1024;
    // The trailer right at the end is the usual answer.
    let mut hi = end;
    while hi >= MAGIC.len() as u64 {
        let lo = hi.saturating_sub(CHUNK);
        let mut buf = vec![0u8; (hi - lo) as usize];
        file.read_exact_at(&mut buf, lo)?;
        if let Some(i) = find_last(&buf, MAGIC) {
            return Ok(Some(lo + i as u64));
        }
        if lo == 0 {
            break;
        }
        // Overlap so that a magic split across two chunks is found.
        hi = lo + MAGIC.len() as u64 - 1;
    }
    Ok(None)
}

/// The message CRC of the mail file `file` if it holds `mail`'s message as it is now.
fn holds_message(file: &File, mail: &Mail) -> Result<Option<u32>> {
    let len = file.metadata()?.len();
    let (stored, crc) = match last_envelope(file, len, mail.name()) {
        Ok(found) => found,
        Err(StoreError::Corrupt(..)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let header = mail.message.header_section();
    if stored.size != mail.message.size() || (header.len() as u64) > stored.size {
        return Ok(None);
    }
    let mut on_disk = vec![0u8; header.len()];
    file.read_exact_at(&mut on_disk, 0)?;
    Ok((on_disk == header).then_some(crc))
}

/// Truncates a file to nothing, by path.
fn truncate(path: &Path) -> io::Result<()> {
    // open(O_TRUNC) and close: no write, no sync; the file exists and is ours.
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map(drop)
}

/// Position of the last occurrence of `needle` in `haystack`.
fn find_last(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

impl MailRepository for FileMailRepository {
    fn store(&self, mail: &Mail) -> Result<()> {
        self.store_mail(mail)
    }

    fn retrieve(&self, name: &str) -> Result<Option<Mail>> {
        Ok(self.retrieve_checked(name, false)?.map(|(mail, _)| mail))
    }

    fn remove(&self, name: &str) -> Result<bool> {
        validate_mail_name(name)?;
        let path = self.path(name);
        // No directory fsync: if a crash undoes the removal, the mail is processed again — a
        // duplicate at worst, never a loss.
        let recycle = self.quarantine && self.free_list().len() < MAX_FREE_FILES;
        let result = if recycle {
            let free_name = format!("{name}.{}.free", fsutil::unique_suffix());
            let free_path = self.dir.join(&free_name);
            fs::rename(&path, &free_path).and_then(|()| {
                // Give the space back now; the inode waits for reuse.
                truncate(&free_path)?;
                self.free_list().push(free_name);
                Ok(())
            })
        } else {
            fs::remove_file(&path)
        };
        match result {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn list(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let file_name = entry?.file_name();
            if let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(".mail")) {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    fn incoming(&self) -> Result<Box<dyn IncomingMessage>> {
        Ok(Box::new(self.start_incoming()))
    }
}

/// A message being written into a [`FileMailRepository`].
pub struct FileIncoming {
    repo: FileMailRepository,
    name: String,
    tmp_path: PathBuf,
    /// The temporary file, created at the first write (or at commit), so that starting a mail
    /// does no I/O.
    file: Option<BufWriter<File>>,
    /// Committed or failed: no more writes.
    closed: bool,
    written: u64,
    /// CRC-32 of the message so far.
    crc: crc32fast::Hasher,
}

impl FileIncoming {
    /// The temporary file, created on first use.
    fn file(&mut self) -> io::Result<&mut BufWriter<File>> {
        if self.closed {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if self.file.is_none() {
            let file = self.repo.create_tmp(&self.tmp_path)?;
            self.file = Some(BufWriter::with_capacity(64 * 1024, file));
        }
        Ok(self.file.as_mut().expect("created above"))
    }
}

impl Write for FileIncoming {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self.file()?;
        let n = file.write(buf)?;
        self.written += n as u64;
        self.crc.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), |f| f.flush())
    }
}

impl IncomingMessage for FileIncoming {
    fn name(&self) -> &str {
        &self.name
    }

    fn commit(mut self: Box<Self>, mut envelope: Envelope) -> Result<()> {
        envelope.name = self.name.clone();
        envelope.size = self.written;
        envelope.touch();
        self.file()?;
        self.closed = true;
        let mut file = self.file.take().expect("opened above");
        // Renamed into place before the fsyncs, so that the directory fsync that follows the
        // file's own covers the renames of other mails committed meanwhile. Nothing is
        // acknowledged before both return; a crash in between can leave the file cut short
        // (its last block on disk, not an earlier one), which is why the record carries the
        // message's CRC, for readers that must check (the log spool importing old mails).
        let path = self.repo.path(&self.name);
        let message_crc = self.crc.clone().finalize();
        let result = (|| -> io::Result<()> {
            file.write_all(&record(&envelope, message_crc)?)?;
            let file = file.into_inner().map_err(|e| e.into_error())?;
            fs::rename(&self.tmp_path, &path)?;
            let ticket = self.repo.dir_sync.ticket();
            let synced = file
                .sync_data()
                .and_then(|()| self.repo.dir_sync.wait(ticket));
            if synced.is_err() {
                // Not durable, so not accepted: nothing may process it.
                let _ = fs::remove_file(&path);
            }
            synced
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&self.tmp_path);
            return Err(e.into());
        }
        Ok(())
    }
}

impl Drop for FileIncoming {
    fn drop(&mut self) {
        if self.file.is_some() {
            // Never committed: the client went away or the message was refused.
            let _ = fs::remove_file(&self.tmp_path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailroom_mailet::Message;

    #[test]
    fn truncate_empties_an_existing_file_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.free");
        fs::write(&path, b"some bytes").unwrap();
        truncate(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), 0);
        let missing = dir.path().join("missing");
        assert_eq!(
            truncate(&missing).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert!(!missing.exists());
    }

    #[test]
    fn a_torn_append_falls_back_to_the_previous_record() {
        let dir = tempfile::tempdir().unwrap();
        let repo = FileMailRepository::open(dir.path()).unwrap();
        let mut mail = Mail::new(
            Envelope::new("m", None, vec![]),
            Message::from_bytes(b"Subject: x\r\n\r\nbody \xff\xffMRENV\r\n"),
        );
        repo.store(&mail).unwrap();
        mail.set_state("second");
        repo.store(&mail).unwrap();
        // A third append cut short by a crash: half a record.
        mail.set_state("third");
        let torn = record(&mail.envelope, 0).unwrap();
        let mut file = OpenOptions::new()
            .append(true)
            .open(repo.path("m"))
            .unwrap();
        file.write_all(&torn[..torn.len() - 5]).unwrap();
        let back = repo.retrieve("m").unwrap().unwrap();
        assert_eq!(back.state(), "second");
        assert_eq!(
            back.message.to_bytes().unwrap(),
            mail.message.to_bytes().unwrap()
        );
        // Garbage in place of the trailer is no better.
        file.write_all(&[0u8; 40]).unwrap();
        assert_eq!(repo.retrieve("m").unwrap().unwrap().state(), "second");
    }

    #[test]
    fn a_record_forged_in_the_message_is_never_taken_for_the_envelope() {
        let dir = tempfile::tempdir().unwrap();
        let repo = FileMailRepository::open(dir.path()).unwrap();
        // A client's message ending with a well-formed record naming some guessed mail.
        let mut forged = Envelope::new("Mail-guess", None, vec![]);
        forged.state = "transport".into();
        let mut body = b"Subject: x\r\n\r\n".to_vec();
        body.extend_from_slice(&record(&forged, 0).unwrap());
        // As if the file had lost everything after the message, the real record included.
        std::fs::write(repo.path("Mail-real"), &body).unwrap();
        assert!(repo.retrieve("Mail-real").unwrap().is_none());
        assert!(dir.path().join("corrupt/Mail-real.mail").exists());
        assert!(repo.list().unwrap().is_empty());
    }

    #[test]
    fn open_existing_creates_nothing_and_reading_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("typo");
        assert!(matches!(
            FileMailRepository::open_existing(&missing),
            Err(StoreError::NotFound(_))
        ));
        assert!(!missing.exists());
        // A write in progress (or cut short) and a file that is not whole.
        fs::write(dir.path().join("x.1.tmp"), b"partial").unwrap();
        fs::write(dir.path().join("Mail-bad.mail"), b"Subject: x\r\n\r\n").unwrap();
        let repo = FileMailRepository::open_existing(dir.path()).unwrap();
        assert_eq!(repo.list().unwrap(), ["Mail-bad"]);
        assert!(repo.retrieve("Mail-bad").unwrap().is_none());
        assert!(dir.path().join("x.1.tmp").exists());
        assert!(dir.path().join("Mail-bad.mail").exists());
        assert!(!dir.path().join("corrupt").exists());
        // The owner's open cleans up and quarantines, as before.
        let owner = FileMailRepository::open(dir.path()).unwrap();
        assert!(!dir.path().join("x.1.tmp").exists());
        assert!(owner.retrieve("Mail-bad").unwrap().is_none());
        assert!(dir.path().join("corrupt/Mail-bad.mail").exists());
    }

    #[test]
    fn large_envelopes_and_changed_headers_are_stored_whole() {
        let dir = tempfile::tempdir().unwrap();
        let repo = FileMailRepository::open(dir.path()).unwrap();
        let mut mail = Mail::new(
            Envelope::new("big", None, vec![]),
            Message::from_bytes(b"Subject: a long subject line\r\n\r\nbody\r\n"),
        );
        // Records far larger than one read chunk, the last one torn.
        mail.set_attribute("blob", "x".repeat(300_000).into());
        repo.store(&mail).unwrap();
        mail.set_state("second");
        repo.store(&mail).unwrap();
        let torn = record(&mail.envelope, 0).unwrap();
        let mut file = OpenOptions::new()
            .append(true)
            .open(repo.path("big"))
            .unwrap();
        file.write_all(&torn[..200_000]).unwrap();
        assert_eq!(repo.retrieve("big").unwrap().unwrap().state(), "second");

        // A copy whose header changed since this repository stored it (an archive written to
        // twice) is rewritten, not appended to, even if the header got shorter.
        mail.message.set_header("Subject", "short");
        repo.store(&mail).unwrap();
        let back = repo.retrieve("big").unwrap().unwrap();
        assert_eq!(
            back.message.to_bytes().unwrap(),
            mail.message.to_bytes().unwrap()
        );
    }
}
