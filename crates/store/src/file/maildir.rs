//! Inboxes as Maildirs: `<root>/<user>/{tmp,new,cur}`.
//!
//! Delivery follows the Maildir protocol — a message is written to `tmp/<unique>`, made durable,
//! and only then renamed into `new/<unique>` — with a group commit in the middle:
//! [`InboxRepository::deliver`] writes the file to `tmp/`, and [`InboxRepository::sync`] makes a
//! whole batch durable at once (one `syncfs` for all the files, the renames into `new/`, then
//! the directories). A reader never sees a message in `new/` that is not whole and durable. The
//! file name is `<secs>.M<usecs>P<pid>Q<n>.<host>,S=<size>,W=<size with CRLF line ends>` (the
//! size fields Dovecot writes and reads).
//!
//! Files have LF line ends, as Postfix's local(8) and Dovecot write them, so that mail readers
//! on the Maildir (mutt) show no `^M`. POP3 sends each LF as CRLF again ([`ToLf`] says how
//! this gives back the exact octets that came in); `,W=` is the size it sends, `,S=` the
//! file's. Files with CRLF ends (written by earlier versions) are read as they are.
//!
//! Reading ([`InboxRepository::open_mailbox`]) lists `new/` and `cur/` without opening a file:
//! the UID is the unique name (the file name without its `,S=`/`,W=` fields and `:2,` flags,
//! which other Maildir readers may change), and the size comes from `,W=`. Only a file another
//! program put there without `,W=` is read once to count its line ends. Messages stay where
//! they are (no move from `new/` to `cur/`), so a session costs two directory reads. The
//! exclusive lock is an `flock` on `<maildir>/.mailroom-pop3.lock`, which the kernel releases
//! when the session ends or the process dies.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mailroom_mailet::Message;

use super::fsutil::{create_dir_durable, sync_dir, try_lock, FileLock};
use super::group_commit::{FlushError, GroupCommit};
use crate::blocking::{InboxRepository, Mailbox};
use crate::{validate_user_name, Delivery, MailboxMessage, Result, StoreError};

/// The most remembered sizes of files without `,W=`.
const MAX_COUNTED_SIZES: usize = 100_000;

/// The lock file in each Maildir that a reading session holds `flock`ed.
const LOCK_FILE: &str = ".mailroom-pop3.lock";

/// The inbox repository of Maildirs under one root.
#[derive(Debug)]
pub struct Maildir {
    root: PathBuf,
    /// The root, kept open for `syncfs`.
    root_dir: File,
    host: String,
    /// Users whose Maildir is known to exist.
    known_users: Mutex<HashSet<String>>,
    /// Deliveries written to `tmp/` and waiting for the next group commit.
    commits: GroupCommit<Vec<Pending>>,
    /// CRLF sizes of files without a `,W=` field (put there by other programs), by path, so
    /// that each is read only once.
    counted_sizes: Mutex<HashMap<PathBuf, u64>>,
}

/// One delivery waiting for the group commit.
#[derive(Debug)]
struct Pending {
    /// Its ticket in the group commit: its owner's sync waits for it.
    ticket: u64,
    tmp: PathBuf,
    new: PathBuf,
    /// Renamed into `new/` by a commit that failed later: its directory still needs a sync.
    renamed: bool,
}

impl Maildir {
    /// Opens (creating if needed) the root directory.
    pub fn open(root: &Path) -> Result<Self> {
        create_dir_durable(root)?;
        Ok(Maildir {
            root_dir: File::open(root)?,
            root: root.to_path_buf(),
            host: host_name(),
            known_users: Mutex::default(),
            commits: GroupCommit::new(Vec::new(), "Maildir commit"),
            counted_sizes: Mutex::default(),
        })
    }

    /// The Maildir of `user`, created on first use.
    pub fn user_dir(&self, user: &str) -> Result<PathBuf> {
        validate_user_name(user)?;
        let dir = self.root.join(user);
        for sub in ["tmp", "new", "cur"] {
            create_dir_durable(&dir.join(sub))?;
        }
        Ok(dir)
    }

    /// `user`'s Maildir, created on first use (and again if it was removed).
    fn maildir_of(&self, user: &str, again: bool) -> Result<PathBuf> {
        let mut known = self.known_users.lock().unwrap_or_else(|p| p.into_inner());
        if !again && known.contains(user) {
            return Ok(self.root.join(user));
        }
        let dir = self.user_dir(user)?;
        if known.insert(user.to_string()) {
            clean_tmp(&dir.join("tmp"), &self.host, SystemTime::now());
        }
        Ok(dir)
    }

    fn unique_name(&self) -> String {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        format!(
            "{}.M{}P{}Q{}.{}",
            now.as_secs(),
            now.subsec_micros(),
            crate::names::pid(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            self.host
        )
    }

    /// Makes a batch durable and visible: one `syncfs` for the files' contents, the renames
    /// into `new/`, then an fsync of each `new/` touched. A `syncfs` or fsync that fails may
    /// have lost data and poisons the Maildir. A rename that fails (the Maildir removed, no
    /// space for `new/` to grow) fails that delivery alone: its file is removed, and its owner's
    /// sync reports the error, so its mail is delivered again, once. An `open` of a directory
    /// that fails (no descriptors left) loses nothing: the renamed deliveries are put back for
    /// the next commit to sync, and this one's waiters fail.
    fn commit(&self, batch: Vec<Pending>) -> std::result::Result<(), FlushError> {
        rustix::fs::syncfs(&self.root_dir).map_err(io::Error::from)?;
        let mut renamed = Vec::with_capacity(batch.len());
        for mut pending in batch {
            if !pending.renamed {
                if let Err(e) = fs::rename(&pending.tmp, &pending.new) {
                    tracing::warn!(error = %e, file = %pending.new.display(),
                        "Maildir delivery failed at its rename; the mail is delivered again");
                    let _ = fs::remove_file(&pending.tmp);
                    self.commits.fail(pending.ticket, e);
                    continue;
                }
                pending.renamed = true;
            }
            renamed.push(pending);
        }
        let dirs: BTreeSet<PathBuf> = renamed
            .iter()
            .filter_map(|p| p.new.parent().map(Path::to_path_buf))
            .collect();
        let mut opened = Vec::with_capacity(dirs.len());
        for dir in dirs {
            match File::open(dir) {
                Ok(dir) => opened.push(dir),
                Err(e) => {
                    tracing::warn!(error = %e, deliveries = renamed.len(),
                        "Maildir commit failed; its directories are synced at the next one");
                    self.commits.with_pending(|pending| pending.extend(renamed));
                    return Err(FlushError::Retry(e));
                }
            }
        }
        for dir in opened {
            dir.sync_all()?;
        }
        Ok(())
    }
}

impl InboxRepository for Maildir {
    fn deliver(&self, user: &str, trace_header: &[u8], message: &Message) -> Result<Delivery> {
        validate_user_name(user)?;
        let mut dir = self.maildir_of(user, false)?;
        let unique = self.unique_name();
        let mut tmp = dir.join("tmp").join(&unique);
        let file = match File::create(&tmp) {
            // The Maildir was removed while the server ran: make it again.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                dir = self.maildir_of(user, true)?;
                tmp = dir.join("tmp").join(&unique);
                File::create(&tmp)?
            }
            other => other?,
        };
        let written = (|| -> io::Result<(u64, u64)> {
            let counted = LineEnds::new(BufWriter::with_capacity(64 * 1024, file));
            let mut out = ToLf::new(counted);
            out.write_all(trace_header)?;
            io::copy(&mut message.reader()?, &mut out)?;
            let mut counted = out.finish()?;
            counted.flush()?;
            Ok((counted.size, counted.crlf_size()))
        })();
        let (size, wire) = match written {
            Ok(sizes) => sizes,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e.into());
            }
        };
        let new = dir.join("new").join(format!("{unique},S={size},W={wire}"));
        let ticket = self.commits.add_numbered(|pending, ticket| {
            pending.push(Pending {
                ticket,
                tmp,
                new,
                renamed: false,
            })
        });
        Ok(Delivery(ticket))
    }

    fn sync(&self, deliveries: &[Delivery]) -> Result<()> {
        let tickets: Vec<u64> = deliveries.iter().map(|d| d.0).collect();
        self.commits
            .wait_each(&tickets, Duration::ZERO, std::mem::take, |batch| {
                self.commit(batch).inspect_err(|e| {
                    if let FlushError::Poison(e) = e {
                        tracing::error!(error = %e, "Maildir sync failed; refusing further deliveries");
                    }
                })
            })
            .map_err(Into::into)
    }

    fn location(&self, user: &str) -> Option<String> {
        Some(self.root.join(user).display().to_string())
    }

    /// From the listing of `new/` and `cur/`, without the reading lock: `,W=` where the name
    /// has it, else the file's length (a file another program put there).
    fn size(&self, user: &str) -> Result<u64> {
        validate_user_name(user)?;
        let dir = self.root.join(user);
        let mut total = 0u64;
        for sub in ["new", "cur"] {
            let entries = match fs::read_dir(dir.join(sub)) {
                Ok(entries) => entries,
                // No Maildir yet: no mail yet.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            for entry in entries {
                let entry = entry?;
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                if name.starts_with('.') {
                    continue;
                }
                let size = match size_field(&name, 'W') {
                    Some(size) => size,
                    None => match entry.metadata() {
                        Ok(meta) => meta.len(),
                        // Taken away by a reader since the listing.
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e.into()),
                    },
                };
                total = total.saturating_add(size);
            }
        }
        Ok(total)
    }

    /// Written as a delivery is, under the unique name `uid`, then synced on its own (a copy
    /// is not a hot path). A UIDL that cannot be a Maildir unique name (with `/`, `,` or `:`,
    /// which the name's fields and flags use) is refused.
    fn import(&self, user: &str, uid: &str, message: &Message) -> Result<bool> {
        validate_user_name(user)?;
        if uid.is_empty()
            || uid.len() > 70
            || !uid.bytes().all(|b| (0x21..=0x7e).contains(&b))
            || uid.contains(['/', ',', ':'])
            || uid.starts_with('.')
        {
            return Err(StoreError::InvalidName(
                uid.to_string(),
                "not usable as a Maildir file name",
            ));
        }
        let dir = self.maildir_of(user, false)?;
        for sub in ["new", "cur"] {
            for entry in fs::read_dir(dir.join(sub))? {
                if entry?
                    .file_name()
                    .to_str()
                    .is_some_and(|n| uid_of(n) == uid)
                {
                    return Ok(false);
                }
            }
        }
        let tmp = dir.join("tmp").join(uid);
        let written = (|| -> io::Result<(u64, u64)> {
            let file = File::create(&tmp)?;
            let counted = LineEnds::new(BufWriter::with_capacity(64 * 1024, file));
            let mut out = ToLf::new(counted);
            io::copy(&mut message.reader()?, &mut out)?;
            let mut counted = out.finish()?;
            counted.flush()?;
            let (size, wire) = (counted.size, counted.crlf_size());
            counted
                .inner
                .into_inner()
                .map_err(|e| e.into_error())?
                .sync_all()?;
            Ok((size, wire))
        })();
        let (size, wire) = match written {
            Ok(sizes) => sizes,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e.into());
            }
        };
        fs::rename(
            &tmp,
            dir.join("new").join(format!("{uid},S={size},W={wire}")),
        )?;
        sync_dir(&dir.join("new"))?;
        Ok(true)
    }

    fn open_mailbox(&self, user: &str) -> Result<Box<dyn Mailbox>> {
        validate_user_name(user)?;
        let mut dir = self.maildir_of(user, false)?;
        let lock = match lock_maildir(&dir) {
            // The Maildir was removed while the server ran: make it again.
            Err(StoreError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                dir = self.maildir_of(user, true)?;
                lock_maildir(&dir)?
            }
            other => other?,
        };
        let mut files = Vec::new();
        for sub in ["new", "cur"] {
            for entry in fs::read_dir(dir.join(sub))? {
                let entry = entry?;
                let Ok(name) = entry.file_name().into_string() else {
                    continue; // not a name any Maildir writer makes
                };
                if name.starts_with('.') {
                    continue;
                }
                files.push((sort_key(&name), sub, name));
            }
        }
        files.sort_unstable();
        let mut messages = Vec::with_capacity(files.len());
        let mut paths = Vec::with_capacity(files.len());
        for (_, sub, name) in files {
            let path = dir.join(sub).join(&name);
            let size = match size_field(&name, 'W') {
                Some(size) => size,
                None => match self.count_crlf_size(&path) {
                    Ok(size) => size,
                    // Taken away by another reader since the listing.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.into()),
                },
            };
            messages.push(MailboxMessage {
                uid: uid_of(&name),
                size,
            });
            paths.push(path);
        }
        Ok(Box::new(MaildirMailbox {
            dir,
            messages,
            paths,
            _lock: lock,
        }))
    }
}

impl Maildir {
    /// The CRLF size of a file without a `,W=` field, read once and then remembered.
    fn count_crlf_size(&self, path: &Path) -> io::Result<u64> {
        let mut sizes = self.counted_sizes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(size) = sizes.get(path) {
            return Ok(*size);
        }
        let mut counter = LineEnds::new(io::sink());
        io::copy(&mut File::open(path)?, &mut counter)?;
        let size = counter.crlf_size();
        // Entries of deleted files are never looked up again: start over rather than grow
        // without bound (a later session counts again, once).
        if sizes.len() >= MAX_COUNTED_SIZES {
            sizes.clear();
        }
        sizes.insert(path.to_path_buf(), size);
        Ok(size)
    }
}

/// Takes the reading lock of the Maildir `dir`, without waiting.
fn lock_maildir(dir: &Path) -> Result<FileLock> {
    try_lock(&dir.join(LOCK_FILE))?
        .ok_or_else(|| StoreError::InUse(format!("mailbox {}", dir.display())))
}

/// A Maildir opened by [`InboxRepository::open_mailbox`].
struct MaildirMailbox {
    /// The user's Maildir.
    dir: PathBuf,
    /// The snapshot.
    messages: Vec<MailboxMessage>,
    /// The file of each message, as listed.
    paths: Vec<PathBuf>,
    /// Holds the `flock` until dropped.
    _lock: FileLock,
}

impl Mailbox for MaildirMailbox {
    fn messages(&self) -> &[MailboxMessage] {
        &self.messages
    }

    fn open_message(&self, index: usize) -> Result<Box<dyn Read + Send>> {
        let path = self
            .paths
            .get(index)
            .ok_or_else(|| StoreError::NotFound(format!("message {}", index + 1)))?;
        match File::open(path) {
            Ok(file) => Ok(Box::new(file)),
            // Another Maildir reader changed its flags (a rename within cur/): find it by UID.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let path = self
                    .find(&self.messages[index].uid)?
                    .ok_or_else(|| StoreError::NotFound(format!("message {}", index + 1)))?;
                Ok(Box::new(File::open(path)?))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn delete(&mut self, indexes: &[usize]) -> Result<()> {
        let mut dirs = BTreeSet::new();
        for &index in indexes {
            let Some(path) = self.paths.get(index) else {
                continue;
            };
            let removed = match fs::remove_file(path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    match self.find(&self.messages[index].uid)? {
                        Some(renamed) => fs::remove_file(&renamed).map(|()| renamed),
                        None => continue,
                    }
                }
                other => other.map(|()| path.clone()),
            };
            let removed = removed?;
            if let Some(dir) = removed.parent() {
                dirs.insert(dir.to_path_buf());
            }
        }
        for dir in dirs {
            sync_dir(&dir)?;
        }
        Ok(())
    }
}

impl MaildirMailbox {
    /// The current file of the message with this UID, wherever it moved.
    fn find(&self, uid: &str) -> io::Result<Option<PathBuf>> {
        for sub in ["cur", "new"] {
            for entry in fs::read_dir(self.dir.join(sub))? {
                let entry = entry?;
                if entry.file_name().to_str().is_some_and(|n| uid_of(n) == uid) {
                    return Ok(Some(entry.path()));
                }
            }
        }
        Ok(None)
    }
}

/// The UID of a Maildir file: its unique name, without the `:2,` flags and the `,S=`/`,W=`
/// fields. A unique name that POP3 cannot carry (over 70 octets, or octets outside `!`..`~`)
/// is replaced by its SHA-1 in hex, which is as stable.
fn uid_of(file_name: &str) -> String {
    let base = file_name.split(':').next().unwrap_or(file_name);
    let unique = base.split(',').next().unwrap_or(base);
    if !unique.is_empty()
        && unique.len() <= 70
        && unique.bytes().all(|b| (0x21..=0x7e).contains(&b))
    {
        return unique.to_string();
    }
    use sha1::{Digest, Sha1};
    Sha1::digest(unique.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The value of a `,<field>=<number>` field of a Maildir file name (`S`: the file's size, `W`:
/// the size with CRLF line ends).
fn size_field(file_name: &str, field: char) -> Option<u64> {
    let base = file_name.split(':').next()?;
    base.split(',')
        .skip(1)
        .find_map(|part| part.strip_prefix(field)?.strip_prefix('=')?.parse().ok())
}

/// Orders Maildir files by delivery time: the seconds and microseconds that start the usual
/// unique names (`<secs>.M<usecs>...`), numerically, then the name.
fn sort_key(file_name: &str) -> (u64, u64, String) {
    let digits = |s: &str| -> (u64, usize) {
        let end = s
            .bytes()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(s.len());
        (s[..end].parse().unwrap_or(0), end)
    };
    let (secs, end) = digits(file_name);
    let micros = file_name[end..]
        .strip_prefix(".M")
        .map_or(0, |rest| digits(rest).0);
    (secs, micros, file_name.to_string())
}

/// What is read from a Maildir file name: its UID, its `S=` and `W=` sizes and its
/// delivery-time sort key (public for the fuzz targets, which feed it any name).
pub fn file_name_fields(file_name: &str) -> (String, Option<u64>, Option<u64>, (u64, u64)) {
    let (secs, micros, _) = sort_key(file_name);
    let (s, w) = (size_field(file_name, 'S'), size_field(file_name, 'W'));
    (uid_of(file_name), s, w, (secs, micros))
}

/// A writer that counts what passes through it: the octets, and the LFs without a CR before
/// them, which POP3 sends as CRLF.
struct LineEnds<W> {
    inner: W,
    /// Octets written.
    size: u64,
    /// LFs not preceded by CR.
    bare_lf: u64,
    /// Whether the last octet written was CR.
    after_cr: bool,
}

impl<W: Write> LineEnds<W> {
    fn new(inner: W) -> Self {
        LineEnds {
            inner,
            size: 0,
            bare_lf: 0,
            after_cr: false,
        }
    }

    /// The size once every bare LF is a CRLF.
    fn crlf_size(&self) -> u64 {
        self.size + self.bare_lf
    }
}

impl<W: Write> Write for LineEnds<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        let written = &buf[..n];
        let mut after_cr = self.after_cr;
        for &b in written {
            if b == b'\n' && !after_cr {
                self.bare_lf += 1;
            }
            after_cr = b == b'\r';
        }
        self.after_cr = after_cr;
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A writer that stores lines with LF ends, as Postfix's local(8) and Dovecot do (mail readers
/// on the Maildir show a CR as `^M`): each CRLF becomes LF. A CRLF whose CR follows another CR
/// is kept as it is, because POP3 sends a stored LF after a CR as it stands: `CR CR LF` stored
/// as `CR LF` would go out one octet short. So what POP3 sends (each LF without a CR before it
/// as CRLF, see [`LineEnds`]) is exactly the message as it came, CRLF octets and size.
struct ToLf<W> {
    inner: W,
    /// A CR read and not written yet: whether it ends a line is known only at the next octet.
    held_cr: bool,
    /// The octet before the held CR was a CR too.
    cr_before_held: bool,
    /// The converted octets of one write, kept to save an allocation per write.
    out: Vec<u8>,
}

impl<W: Write> ToLf<W> {
    fn new(inner: W) -> Self {
        ToLf {
            inner,
            held_cr: false,
            cr_before_held: false,
            out: Vec::new(),
        }
    }

    /// Writes a CR still held (the message ended in one) and hands the writer back.
    fn finish(mut self) -> io::Result<W> {
        if self.held_cr {
            self.inner.write_all(b"\r")?;
        }
        Ok(self.inner)
    }
}

impl<W: Write> Write for ToLf<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        for &b in buf {
            if self.held_cr {
                self.held_cr = false;
                if b == b'\n' {
                    if self.cr_before_held {
                        out.push(b'\r');
                    }
                    out.push(b'\n');
                    continue;
                }
                out.push(b'\r');
                if b == b'\r' {
                    self.held_cr = true;
                    self.cr_before_held = true;
                    continue;
                }
            } else if b == b'\r' {
                // Every CR is held until the next octet, so the one before this is no CR.
                self.held_cr = true;
                self.cr_before_held = false;
                continue;
            }
            out.push(b);
        }
        let written = self.inner.write_all(&out);
        self.out = out;
        written.map(|()| buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// How long a file may stay in `tmp/` before any Maildir writer may remove it (the Maildir
/// specification's 36 hours).
const TMP_STALE: Duration = Duration::from_secs(36 * 3600);

/// Removes what interrupted deliveries left in a Maildir's `tmp/` (a crash or a power cut
/// between the write and the rename into `new/`; none of them was acknowledged, and the spool
/// delivers them again): the files of this host's writers whose process is gone, and, as the
/// Maildir specification allows, any file untouched for [`TMP_STALE`]. Run on the first
/// delivery to each Maildir after a start. Best effort: what cannot be removed stays.
fn clean_tmp(tmp: &Path, host: &str, now: SystemTime) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    let own = crate::names::pid();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let dead_writer = name
            .to_str()
            .and_then(|name| writer_pid(name, host))
            .is_some_and(|pid| pid != own && !Path::new(&format!("/proc/{pid}")).exists());
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|at| at + TMP_STALE < now);
        if dead_writer || stale {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// The process id in a unique name of this module's form, `<secs>.M<usecs>P<pid>Q<n>.<host>`,
/// written on `host`; `None` for any other name.
fn writer_pid(name: &str, host: &str) -> Option<u32> {
    let (secs, rest) = name.split_once('.')?;
    let (unique, name_host) = rest.split_once('.')?;
    if name_host != host || secs.parse::<u64>().is_err() {
        return None;
    }
    let (usecs, rest) = unique.strip_prefix('M')?.split_once('P')?;
    let (pid, n) = rest.split_once('Q')?;
    if usecs.parse::<u32>().is_err() || n.parse::<u64>().is_err() {
        return None;
    }
    pid.parse().ok()
}

/// This host's name for unique file names, with the characters Maildir reserves (`/`, `:`)
/// escaped as its specification asks.
fn host_name() -> String {
    // What gethostname(2) answers: the node name of uname(2).
    let raw = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let name = if raw.is_empty() {
        "localhost".to_string()
    } else {
        raw
    };
    name.replace('/', "\\057").replace(':', "\\072")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmp_keeps_live_writers_and_others_files_and_loses_the_dead_and_the_stale() {
        let dir = tempfile::tempdir().unwrap();
        let host = "mx.example";
        let own = crate::names::pid();
        // Above any pid_max: a process that cannot exist.
        let dead = "1796151859.M239542P999999999Q3.mx.example";
        let live = format!("1796151859.M239543P{own}Q4.mx.example");
        let other_host = "1796151859.M239544P999999999Q5.other.example";
        let dovecot = "1796151859.M239545P999999999.mx.example";
        let old = "left-by-someone";
        for name in [dead, &live, other_host, dovecot, old] {
            fs::write(dir.path().join(name), "x").unwrap();
        }
        let file = File::options()
            .write(true)
            .open(dir.path().join(old))
            .unwrap();
        file.set_modified(SystemTime::now() - TMP_STALE - Duration::from_secs(60))
            .unwrap();
        clean_tmp(dir.path(), host, SystemTime::now());
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut kept = vec![live.clone(), other_host.to_string(), dovecot.to_string()];
        kept.sort();
        assert_eq!(left, kept);
        assert_eq!(writer_pid(&live, host), Some(own));
        assert_eq!(writer_pid("1.M2P3Q4.mx.example,S=10", host), None);
        assert_eq!(writer_pid("x.M2P3Q4.mx.example", host), None);
    }

    #[test]
    fn host_name_is_the_kernel_host_name_escaped() {
        let name = host_name();
        assert!(!name.is_empty() && !name.contains('/') && !name.contains(':'));
        if let Ok(kernel) = fs::read_to_string("/proc/sys/kernel/hostname") {
            let kernel = kernel.trim_end_matches('\n');
            let escaped = kernel.replace('/', "\\057").replace(':', "\\072");
            assert_eq!(name, escaped);
        }
    }
}

#[cfg(test)]
mod line_end_tests {
    use super::*;

    /// What POP3 sends for stored octets (before dot-stuffing): each LF without a CR before it
    /// as CRLF, as `mailroom_net::DotEncoder` does.
    fn wire(stored: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut after_cr = false;
        for &b in stored {
            if b == b'\n' && !after_cr {
                out.push(b'\r');
            }
            out.push(b);
            after_cr = b == b'\r';
        }
        out
    }

    /// Stores `input` written in the given pieces: the file's octets, `,S=` and `,W=`.
    fn store(pieces: &[&[u8]]) -> (Vec<u8>, u64, u64) {
        let mut out = ToLf::new(LineEnds::new(Vec::new()));
        for piece in pieces {
            out.write_all(piece).unwrap();
        }
        let counted = out.finish().unwrap();
        let (size, wire) = (counted.size, counted.crlf_size());
        (counted.inner, size, wire)
    }

    #[test]
    fn crlf_lines_are_stored_with_lf_and_sent_back_exactly() {
        let cases: [(&[u8], &[u8]); 9] = [
            (b"A: b\r\n\r\nbody\r\n", b"A: b\n\nbody\n"),
            (b"no end", b"no end"),
            (b"bare lf\nstays\n", b"bare lf\nstays\n"),
            (b"bare\rcr\r\n", b"bare\rcr\n"),
            (b"two crs\r\r\n", b"two crs\r\r\n"),
            (b"three\r\r\r\nx", b"three\r\r\r\nx"),
            (b"ends in cr\r", b"ends in cr\r"),
            (b"\r\n\r\n", b"\n\n"),
            (b"\r\r\n\r\n", b"\r\r\n\n"),
        ];
        for (input, stored) in cases {
            // Whole, split at every boundary, and octet by octet.
            let mut splits: Vec<Vec<&[u8]>> = (0..=input.len())
                .map(|at| vec![&input[..at], &input[at..]])
                .collect();
            splits.push(input.chunks(1).collect());
            for pieces in splits {
                let (file, size, wire_size) = store(&pieces);
                assert_eq!(file, stored, "{input:?} in {pieces:?}");
                assert_eq!(size, file.len() as u64);
                assert_eq!(wire(&file), wire(input), "{input:?}");
                assert_eq!(wire_size, wire(input).len() as u64, "{input:?}");
            }
        }
    }
}
