//! The spool as a log: mails, processor hops and removals are records appended to segment
//! files, and concurrent writers share one `fdatasync` (group commit).
//!
//! Why a log: every accepted mail must be durable before its `250`. With one file per mail,
//! each acceptance costs a file creation or rename, an `fdatasync` and a directory fsync —
//! each a device flush — and these, not the protocol, bound how fast a server on a small
//! machine takes mail in. Appended to a shared segment, ten sessions' mails are made durable
//! by one `fdatasync`, with no file created, renamed or removed per mail.
//!
//! ```text
//! segment  = record*
//! record   = header (36 octets) | mail name | payload
//! header   = "MRLG" | kind (1) | 0 0 0 | seq (u64) | name length (u32) | payload length (u64)
//!            | CRC-32 of name and payload (u32)
//!            | CRC-32 of the 32 octets before and of the segment's number (u32)
//! MAIL        payload = message | envelope JSON | envelope length (u32)
//! ENVELOPE    payload = envelope JSON   (a processor hop: the message is the last MAIL's)
//! DONE        payload = empty           (the mail left the spool)
//! ENVELOPE_AT payload = next attempt (u64, ms since the Unix epoch) | envelope JSON
//!                                       (a requeue: not due before that time)
//! ```
//!
//! Integers are little-endian; `seq` orders all records of the spool. Records are read
//! forward, framed by their lengths, and reading a segment stops at the first record that is
//! not whole: with group commit, no record after a torn one was ever acknowledged (each
//! acknowledgement follows an `fdatasync` of everything appended before it). Octets inside a
//! message are never taken for records, since the reader skips payloads by their length.
//! The retry schedule is the one of a mail's latest envelope record: a MAIL or ENVELOPE record
//! makes it due at once, an ENVELOPE_AT record at its time. Segments written before
//! ENVELOPE_AT existed read as they always did.
//!
//! * Small mails (up to [`INLINE_MAX`]) go to the active segment `seg-<n>.log`, which is
//!   replaced by a new one past [`SEGMENT_MAX`]. A larger mail is streamed into a segment of
//!   its own, `big-<n>.log` (written as a `.tmp`, fsync'd, renamed, directory fsync'd), so a
//!   100 MiB message never sits in memory nor holds up other writers.
//! * Removals append a DONE record without waiting for it: if a crash loses it, the mail is
//!   processed again (a duplicate, never a loss). The next group commit makes it durable.
//! * A segment is deleted once nothing in it is needed: no live mail's message or current
//!   envelope is in it (each such use is a [`segments::Pin`]), and every mail its DONE records
//!   ended has no MAIL record left in another segment (else deleting the DONE would bring that
//!   mail back after a restart). The records that superseded a segment's are made durable
//!   before it is deleted, and before a segment with DONE records is deleted, the directory is
//!   fsync'd, so that the deletions it relied on are durable first.
//! * A mail kept for long (retried later) would keep its old segment forever, so when more
//!   than [`MAX_SEGMENTS`] small segments exist, the live mails of the oldest are written
//!   again into the active one.
//! * No slow work runs under the lock that commits and leases take: the next segment is
//!   created and filled with zeros ahead of time by the `spool-segments` thread (appends then
//!   never change the file's size, so an `fdatasync` writes the data alone), and compaction
//!   and deleting segments (with their syncs) run in the caller's thread, outside the lock.
//! * Mails are indexed in memory; opening the spool reads every segment once. Leases live in
//!   memory as in every file repository ([`queue`]): a crash drops them and interrupted mails
//!   are handed out again; the retry schedule is in the log and survives.
//! * One process per spool: the directory is `flock`ed. Other processes may still read it
//!   ([`LogSpool::snapshot`], for `mailroom queue`), since segments are only ever appended to.
//! * A spool directory of the older one-file-per-mail format (`<name>.mail`) is imported into
//!   the log when opened.
//! * A failed `fdatasync` poisons the spool: every later commit fails.

mod incoming;
mod queue;
mod record;
mod replay;
mod repository;
mod segments;
mod snapshot;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use mailroom_mailet::{Envelope, Mail};

use super::fsutil::{create_dir_durable, open_message_at, FileLock};
use super::group_commit::GroupCommit;
use crate::Result;
use queue::LeaseQueue;
use segments::{Pin, Segment, SegmentFiles};
pub use snapshot::{Snapshot, SpooledMail};

/// Messages up to this size are appended to the shared segment; larger ones get their own.
pub const INLINE_MAX: usize = 256 * 1024;
/// A segment past this size is replaced by a new one.
pub const SEGMENT_MAX: u64 = 32 * 1024 * 1024;
/// Small segments beyond this count make the oldest one's live mails move forward.
pub const MAX_SEGMENTS: usize = 8;
/// New mail is refused (`452 4.3.1`) when the spool's file system has less than this free at
/// DATA, or less than half of it when the message is complete: the rest is kept for the mails
/// already accepted (their hops, retries and removals, the next segment, their deliveries when
/// the inboxes share the file system). A small mail goes to octets zero-filled ahead of time,
/// so its append alone would succeed on a full disk; this check is what refuses it.
pub const SPACE_RESERVE: u64 = 16 * 1024 * 1024;

/// The log spool. See the [module docs](self).
pub struct LogSpool {
    shared: Arc<Shared>,
    /// Prepares the next segment; stopped and joined on drop.
    segments_thread: Option<JoinHandle<()>>,
    /// The exclusive `flock` of the directory: one process per spool.
    _lock: FileLock,
}

struct Shared {
    dir: PathBuf,
    /// [`SEGMENT_MAX`], smaller in tests.
    segment_max: u64,
    inner: Mutex<Inner>,
    /// Wakes workers waiting in `lease`.
    wake: Condvar,
    /// Wakes the `spool-segments` thread, and writers waiting for the next segment.
    room: Condvar,
    /// Group commit of the small segments; shared with the flusher thread, which must not
    /// keep the spool open.
    commits: Arc<GroupCommit<SegmentFiles>>,
    /// Incoming messages being received: each will soon want an `fdatasync`.
    receiving: AtomicUsize,
    /// Whether the active segment is full: checked before each append without the lock.
    full: AtomicBool,
    /// [`SPACE_RESERVE`] unless set: the free space below which new mail is refused.
    reserve: AtomicU64,
}

struct Inner {
    segments: BTreeMap<u64, Segment>,
    /// The small segment appended to.
    active: u64,
    active_len: u64,
    /// How far the active segment has been filled with zeros ahead of the appends.
    active_prefilled: u64,
    /// The segment being filled with zeros further now, if any.
    prefilling: Option<u64>,
    /// The next small segment, created and filled with zeros ahead of time.
    spare: Option<(u64, Segment)>,
    /// Whether a thread is creating the spare now.
    preparing: bool,
    /// Whether a thread is compacting now.
    compacting: bool,
    /// Set when the spool is dropped: the `spool-segments` thread ends.
    closing: bool,
    next_segment: u64,
    next_seq: u64,
    mails: HashMap<String, Entry>,
    queue: LeaseQueue,
    /// Mails whose new large version is being written to its own segment.
    committing_big: HashSet<String>,
}

struct Entry {
    /// The seq of the MAIL record: orders the spool.
    seq: u64,
    content: Content,
    /// Keeps the message's segment.
    _content_pin: Pin,
    envelope: Envelope,
    /// Keeps the segment of the current envelope record; says which it is.
    envelope_pin: Pin,
    /// When the mail is due, as stored with its envelope (`None`: at once).
    next_attempt: Option<SystemTime>,
    /// Every segment holding a MAIL record of this mail (the current one and superseded ones).
    mail_segments: Vec<u64>,
}

#[derive(Clone, Copy)]
struct Content {
    segment: u64,
    offset: u64,
    len: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl LogSpool {
    /// Opens (creating if needed) the spool in `dir`: reads every segment, queues the mails
    /// found, and imports mails left in the older one-file-per-mail format. Leases last
    /// [`crate::DEFAULT_LEASE`].
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with(dir, SEGMENT_MAX)
    }

    /// Opens the spool in `dir` as [`LogSpool::open`] does, but only if the directory exists:
    /// else [`crate::StoreError::NotFound`], and nothing is created (`mailroom queue` with the
    /// server stopped).
    pub fn open_existing(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(crate::StoreError::NotFound(format!(
                "spool {}",
                dir.display()
            )));
        }
        Self::open(dir)
    }

    /// Sets the free space below which new mail is refused ([`SPACE_RESERVE`] by default).
    pub fn with_space_reserve(self, octets: u64) -> Self {
        self.shared.reserve.store(octets, Ordering::Relaxed);
        self
    }

    /// Sets how long a lease lasts unless renewed.
    pub fn with_lease_duration(self, duration: Duration) -> Self {
        lock(&self.shared.inner).queue.duration = duration;
        self
    }

    fn open_with(dir: &Path, segment_max: u64) -> Result<Self> {
        create_dir_durable(dir)?;
        let lock_file = replay::lock_directory(dir)?;
        let (segments, records) = replay::load(dir)?;
        let next_segment = segments.keys().next_back().map_or(1, |n| n + 1);
        let mut inner = Inner {
            segments,
            active: 0,
            active_len: 0,
            active_prefilled: 0,
            prefilling: None,
            spare: None,
            preparing: false,
            compacting: false,
            closing: false,
            next_segment,
            next_seq: records
                .iter()
                .map(|(_, r)| r.seq)
                .max()
                .map_or(1, |s| s + 1),
            mails: HashMap::new(),
            queue: LeaseQueue::new(crate::DEFAULT_LEASE),
            committing_big: HashSet::new(),
        };
        replay::replay(&mut inner, records);
        // Oldest first; a mail requeued for later waits for its time.
        let mut live: Vec<(u64, String, Option<SystemTime>)> = inner
            .mails
            .iter()
            .map(|(n, e)| (e.seq, n.clone(), e.next_attempt))
            .collect();
        live.sort();
        for (_, name, at) in live {
            inner
                .queue
                .queue(&name, at.unwrap_or(SystemTime::UNIX_EPOCH));
        }
        let number = inner.next_segment;
        inner.next_segment += 1;
        let step = segments::PREFILL_STEP.min(segment_max);
        let first = Segment::prepare(dir, number, step)?;
        inner.active_prefilled = step;
        let commits = Arc::new(GroupCommit::new(
            SegmentFiles::new(first.file.clone()),
            "fdatasync of the spool",
        ));
        inner.segments.insert(number, first);
        inner.active = number;
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            segment_max,
            inner: Mutex::new(inner),
            wake: Condvar::new(),
            room: Condvar::new(),
            commits: commits.clone(),
            receiving: AtomicUsize::new(0),
            full: AtomicBool::new(false),
            reserve: AtomicU64::new(SPACE_RESERVE),
        });
        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("spool-flusher".into())
            .spawn(move || segments::flusher(weak, &commits))?;
        let preparer = shared.clone();
        let segments_thread = std::thread::Builder::new()
            .name("spool-segments".into())
            .spawn(move || preparer.prepare_spares())?;
        let spool = LogSpool {
            shared,
            segments_thread: Some(segments_thread),
            _lock: lock_file,
        };
        spool.shared.collect_garbage()?;
        spool.import_mail_files(dir)?;
        Ok(spool)
    }
}

impl Drop for LogSpool {
    fn drop(&mut self) {
        lock(&self.shared.inner).closing = true;
        self.shared.room.notify_all();
        if let Some(thread) = self.segments_thread.take() {
            let _ = thread.join();
        }
    }
}

impl Shared {
    /// Points the index at a new MAIL record (its schedule: due at once).
    fn index_mail(
        &self,
        inner: &mut Inner,
        name: &str,
        seq: u64,
        content: Content,
        envelope: Envelope,
    ) {
        let segment = &inner.segments[&content.segment];
        // Once for the message, once for the envelope that comes with it.
        let (content_pin, envelope_pin) = (segment.pin(), segment.pin());
        let mut mail_segments = vec![content.segment];
        if let Some(old) = inner.mails.remove(name) {
            mail_segments.extend(
                old.mail_segments
                    .iter()
                    .copied()
                    .filter(|s| *s != content.segment),
            );
        }
        inner.mails.insert(
            name.to_string(),
            Entry {
                seq,
                content,
                _content_pin: content_pin,
                envelope,
                envelope_pin,
                next_attempt: None,
                mail_segments,
            },
        );
    }

    /// The mail called `name`, read from its segment.
    fn mail(&self, inner: &Inner, name: &str) -> std::io::Result<Option<Mail>> {
        let Some(entry) = inner.mails.get(name) else {
            return Ok(None);
        };
        let file = inner.segments[&entry.content.segment].file.clone();
        let message = open_message_at(file, entry.content.offset, entry.content.len)?;
        Ok(Some(Mail {
            envelope: entry.envelope.clone(),
            message,
        }))
    }

    /// Queues a mail for the workers, due at once (a leased one stays leased).
    fn enqueue(&self, name: &str) {
        let mut inner = lock(&self.inner);
        if inner.mails.contains_key(name) && inner.queue.queue(name, SystemTime::now()) {
            self.wake.notify_one();
        }
    }

    /// Fails with [`std::io::ErrorKind::StorageFull`] when less than the reserve, divided by
    /// `divisor`, is free for the spool: no new mail is accepted then (the whole reserve at
    /// DATA, half of it when the message is complete).
    fn check_reserve(&self, divisor: u64) -> std::io::Result<()> {
        let reserve = self.reserve.load(Ordering::Relaxed) / divisor;
        super::fsutil::check_reserve(&self.dir, reserve)
    }

    /// Drops a mail from the index whose record could not be made durable: it was never
    /// accepted. (If the record reached the disk anyway, a restart processes it: a duplicate
    /// at worst.)
    fn forget(&self, name: &str) {
        let mut inner = lock(&self.inner);
        inner.mails.remove(name);
        inner.queue.forget(name);
    }
}
