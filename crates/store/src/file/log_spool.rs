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
//! MAIL     payload = message | envelope JSON | envelope length (u32)
//! ENVELOPE payload = envelope JSON      (a processor hop: the message is the last MAIL's)
//! DONE     payload = empty              (the mail left the spool)
//! ```
//!
//! Integers are little-endian; `seq` orders all records of the spool. Records are read
//! forward, framed by their lengths, and reading a segment stops at the first record that is
//! not whole: with group commit, no record after a torn one was ever acknowledged (each
//! acknowledgement follows an `fdatasync` of everything appended before it). Octets inside a
//! message are never taken for records, since the reader skips payloads by their length.
//!
//! * Small mails (up to [`INLINE_MAX`]) go to the active segment `seg-<n>.log`, which is
//!   replaced by a new one past [`SEGMENT_MAX`]. A larger mail is streamed into a segment of
//!   its own, `big-<n>.log` (written as a `.tmp`, fsync'd, renamed, directory fsync'd), so a
//!   100 MiB message never sits in memory nor holds up other writers.
//! * Removals append a DONE record without waiting for it: if a crash loses it, the mail is
//!   processed again (a duplicate, never a loss). The next group commit makes it durable.
//! * A segment is deleted once nothing in it is needed: no live mail's message or current
//!   envelope is in it, and every mail its DONE records ended has no MAIL record left in
//!   another segment (else deleting the DONE would bring that mail back after a restart).
//!   Before a segment with DONE records is deleted, the directory is fsync'd, so that the
//!   deletions it relied on are durable first.
//! * A mail kept for long (retried later) would keep its old segment forever, so when more
//!   than [`MAX_SEGMENTS`] small segments exist, the live mails of the oldest are written
//!   again into the active one.
//! * Mails are indexed in memory; opening the spool reads every segment once. Locks live in
//!   memory as in every file repository: a crash drops them and interrupted mails are handed
//!   out again.
//! * A spool directory of the older one-file-per-mail format (`<name>.mail`) is imported into
//!   the log when opened.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mailroom_mailet::{Envelope, Mail};

use super::fsutil::{create_dir_durable, open_message_at, sync_dir};
use super::FileMailRepository;
use crate::blocking::{IncomingMessage, MailRepository, SpoolRepository};
use crate::{validate_mail_name, Result};

/// Messages up to this size are appended to the shared segment; larger ones get their own.
pub const INLINE_MAX: usize = 256 * 1024;
/// A segment past this size is replaced by a new one.
pub const SEGMENT_MAX: u64 = 32 * 1024 * 1024;
/// Small segments beyond this count make the oldest one's live mails move forward.
pub const MAX_SEGMENTS: usize = 8;

/// How long the writer about to `fdatasync` waits for others when more messages are being
/// received (PostgreSQL's `commit_delay`, applied only when there are `commit_siblings`).
const COMMIT_DELAY: Duration = Duration::from_micros(300);

/// How much of the active segment is filled with zeros at a time, ahead of the appends.
const PREFILL_STEP: u64 = 4 * 1024 * 1024;

const MAGIC: &[u8; 4] = b"MRLG";
const HEADER: usize = 36;
const KIND_MAIL: u8 = 1;
const KIND_ENVELOPE: u8 = 2;
const KIND_DONE: u8 = 3;

/// The log spool. See the [module docs](self).
pub struct LogSpool {
    shared: Arc<Shared>,
    /// Held open with an exclusive `flock`: one process per spool.
    _lock: File,
}

struct Shared {
    dir: PathBuf,
    /// [`SEGMENT_MAX`], smaller in tests.
    segment_max: u64,
    inner: Mutex<Inner>,
    /// Wakes workers waiting in `lease`.
    wake: Condvar,
    /// Group commit; shared with the flusher thread, which must not keep the spool open.
    commits: Arc<Commits>,
    /// Incoming messages being received: each will soon want an `fdatasync`.
    receiving: std::sync::atomic::AtomicUsize,
}

/// The group commit's state and its wake-ups.
#[derive(Default)]
struct Commits {
    sync: Mutex<SyncState>,
    synced: Condvar,
    /// Wakes the flusher thread when a passive waiter arrives.
    flush_needed: Condvar,
}

/// Group commit state: appends are numbered; `durable` says up to which one an `fdatasync`
/// has completed.
#[derive(Default)]
struct SyncState {
    durable: u64,
    running: bool,
    /// Callers waiting for durability without starting an `fdatasync` themselves.
    passive_waiters: usize,
    /// Set for good by a failed `fdatasync`: what is on disk can no longer be known.
    poisoned: Option<io::ErrorKind>,
}

struct Inner {
    segments: BTreeMap<u64, Segment>,
    /// The small segment appended to.
    active: u64,
    active_len: u64,
    /// How far the active segment has been filled with zeros ahead of the appends.
    active_prefilled: u64,
    next_segment: u64,
    next_seq: u64,
    /// Appends so far (the tickets of group commit).
    appended: u64,
    mails: HashMap<String, Entry>,
    waiting: VecDeque<String>,
    /// The names in `waiting` or `delayed` that still count; others there are stale (removed
    /// or leased since) and skipped, so that no removal has to search the queues.
    queued: HashSet<String>,
    /// Leased mails, with the form of the message they had when leased.
    leased: HashMap<String, MessageForm>,
    delayed: Vec<(Instant, String)>,
    /// Mails whose new large version is being written to its own segment.
    committing_big: HashSet<String>,
}

struct Segment {
    file: Arc<File>,
    path: PathBuf,
    /// A segment of one large mail.
    big: bool,
    /// Live references: mails whose message or current envelope is here.
    pins: usize,
    /// Segments holding MAIL records of the mails this segment's DONE records ended.
    done_refs: HashSet<u64>,
    /// Never deleted: damaged, kept for an administrator.
    keep: bool,
}

struct Entry {
    /// The seq of the MAIL record: orders the spool.
    seq: u64,
    content: Content,
    envelope: Envelope,
    envelope_segment: u64,
    /// Every segment holding a MAIL record of this mail (the current one and superseded ones).
    mail_segments: Vec<u64>,
}

#[derive(Clone, Copy)]
struct Content {
    segment: u64,
    offset: u64,
    len: u64,
}

/// What can change of a leased mail's message: its header section and size.
#[derive(Clone, PartialEq, Eq)]
struct MessageForm {
    header: Vec<u8>,
    size: u64,
}

impl MessageForm {
    fn of(mail: &Mail) -> Self {
        MessageForm {
            header: mail.message.header_section().to_vec(),
            size: mail.message.size(),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn segment_path(dir: &Path, number: u64, big: bool) -> PathBuf {
    dir.join(format!(
        "{}-{number:016}.log",
        if big { "big" } else { "seg" }
    ))
}

/// The CRC of a header's first 32 octets, salted with the number of the segment it belongs to:
/// a record is only ever valid in its own segment, so stale blocks of a deleted segment that
/// surface in another file after a power loss are never read as records.
fn header_crc(h: &[u8; HEADER], segment: u64) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&h[0..32]);
    crc.update(&segment.to_le_bytes());
    crc.finalize()
}

/// The header of a record in `segment`.
fn header(
    segment: u64,
    kind: u8,
    seq: u64,
    name: &str,
    payload_len: u64,
    payload_crc: u32,
) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[0..4].copy_from_slice(MAGIC);
    h[4] = kind;
    h[8..16].copy_from_slice(&seq.to_le_bytes());
    h[16..20].copy_from_slice(&(name.len() as u32).to_le_bytes());
    h[20..28].copy_from_slice(&payload_len.to_le_bytes());
    h[28..32].copy_from_slice(&payload_crc.to_le_bytes());
    let crc = header_crc(&h, segment);
    h[32..36].copy_from_slice(&crc.to_le_bytes());
    h
}

fn envelope_json(envelope: &Envelope) -> io::Result<Vec<u8>> {
    serde_json::to_vec(envelope).map_err(io::Error::other)
}

/// The envelope at the end of a MAIL payload: `(envelope, message length)`.
fn mail_envelope(file: &File, payload: u64, payload_len: u64) -> io::Result<(Envelope, u64)> {
    let mut len = [0u8; 4];
    file.read_exact_at(&mut len, payload + payload_len - 4)?;
    let json_len = u64::from(u32::from_le_bytes(len));
    let message_len = payload_len
        .checked_sub(4 + json_len)
        .ok_or_else(|| io::Error::other("envelope longer than its record"))?;
    let mut json = vec![0u8; json_len as usize];
    file.read_exact_at(&mut json, payload + message_len)?;
    let envelope = serde_json::from_slice(&json).map_err(io::Error::other)?;
    Ok((envelope, message_len))
}

/// One record found by [`scan`].
struct Scanned {
    kind: u8,
    seq: u64,
    name: String,
    /// The envelope of MAIL and ENVELOPE records.
    envelope: Option<Envelope>,
    /// Where a MAIL record's message is.
    message: Option<(u64, u64)>,
}

/// Reads the whole records of a segment, in order; stops at the first one that is not whole.
/// Also says whether what follows looks like damage rather than a torn last record: a whole
/// record header further on.
fn scan(file: &File, segment: u64) -> io::Result<(Vec<Scanned>, bool)> {
    let len = file.metadata()?.len();
    let mut records = Vec::new();
    let mut at = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    while at + HEADER as u64 <= len {
        let mut h = [0u8; HEADER];
        file.read_exact_at(&mut h, at)?;
        let u32_at = |i: usize| u32::from_le_bytes(h[i..i + 4].try_into().expect("4 octets"));
        let u64_at = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().expect("8 octets"));
        if &h[0..4] != MAGIC || u32_at(32) != header_crc(&h, segment) {
            break;
        }
        let kind = h[4];
        let seq = u64_at(8);
        let name_len = u64::from(u32_at(16));
        let payload_len = u64_at(20);
        let payload_crc = u32_at(28);
        let payload = at + HEADER as u64 + name_len;
        let Some(end) = payload.checked_add(payload_len).filter(|end| *end <= len) else {
            break;
        };
        // Check the name and payload against their CRC.
        let mut crc = crc32fast::Hasher::new();
        let mut pos = at + HEADER as u64;
        while pos < end {
            let n = ((end - pos) as usize).min(buf.len());
            file.read_exact_at(&mut buf[..n], pos)?;
            crc.update(&buf[..n]);
            pos += n as u64;
        }
        if crc.finalize() != payload_crc {
            break;
        }
        let mut name = vec![0u8; name_len as usize];
        file.read_exact_at(&mut name, at + HEADER as u64)?;
        let Ok(name) = String::from_utf8(name) else {
            break;
        };
        let mut scanned = Scanned {
            kind,
            seq,
            name,
            envelope: None,
            message: None,
        };
        match kind {
            KIND_MAIL => {
                let Ok((envelope, message_len)) = mail_envelope(file, payload, payload_len) else {
                    break;
                };
                scanned.envelope = Some(envelope);
                scanned.message = Some((payload, message_len));
            }
            KIND_ENVELOPE => {
                let mut json = vec![0u8; payload_len as usize];
                file.read_exact_at(&mut json, payload)?;
                let Ok(envelope) = serde_json::from_slice(&json) else {
                    break;
                };
                scanned.envelope = Some(envelope);
            }
            KIND_DONE => {}
            _ => break,
        }
        records.push(scanned);
        at = end;
    }
    let damaged = at < len && header_after(file, segment, at + 1, len)?;
    Ok((records, damaged))
}

/// Whether a record header with a valid CRC starts anywhere in `from..len`.
fn header_after(file: &File, segment: u64, from: u64, len: u64) -> io::Result<bool> {
    let mut chunk = vec![0u8; 1 << 20];
    let mut pos = from;
    while pos + HEADER as u64 <= len {
        let n = (chunk.len() as u64).min(len - pos) as usize;
        file.read_exact_at(&mut chunk[..n], pos)?;
        for i in chunk[..n]
            .windows(MAGIC.len())
            .enumerate()
            .filter(|(_, w)| w == MAGIC)
            .map(|(i, _)| i)
        {
            let mut h = [0u8; HEADER];
            let at = pos + i as u64;
            if at + HEADER as u64 <= len {
                file.read_exact_at(&mut h, at)?;
                let crc = u32::from_le_bytes(h[32..36].try_into().expect("4 octets"));
                if crc == header_crc(&h, segment) {
                    return Ok(true);
                }
            }
        }
        // Overlap so that a header across two chunks is seen.
        pos += n.saturating_sub(HEADER) as u64 + 1;
    }
    Ok(false)
}

impl LogSpool {
    /// Opens (creating if needed) the spool in `dir`: reads every segment, queues the mails
    /// found, and imports mails left in the older one-file-per-mail format.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with(dir, SEGMENT_MAX)
    }

    fn open_with(dir: &Path, segment_max: u64) -> Result<Self> {
        create_dir_durable(dir)?;
        let lock_file = lock_directory(dir)?;
        let mut found: Vec<(u64, bool, PathBuf)> = Vec::new();
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let parsed = file_name.strip_suffix(".log").and_then(|stem| {
                let (kind, number) = stem.split_once('-')?;
                Some((number.parse::<u64>().ok()?, kind == "big"))
            });
            if let Some((number, big)) = parsed {
                found.push((number, big, path));
            } else if file_name.ends_with(".log.tmp") {
                // A large mail whose commit a crash cut short: never acknowledged.
                let _ = fs::remove_file(&path);
            }
        }
        found.sort();
        let mut segments = BTreeMap::new();
        let mut records: Vec<(u64, Scanned)> = Vec::new();
        for (number, big, path) in found {
            let file = File::options().read(true).write(true).open(&path)?;
            // After a kill -9 the last records may be in the page cache only: make them
            // durable before trusting them to supersede older ones.
            file.sync_data()?;
            let (scanned, damaged) = scan(&file, number)?;
            if damaged {
                // Records after a damaged one cannot be trusted (nor found safely), and
                // acknowledged mails may be among them: keep the file for an administrator.
                tracing::error!(segment = %path.display(), records = scanned.len(),
                    "spool segment damaged in the middle; reading stopped there, and the file is kept");
            }
            records.extend(scanned.into_iter().map(|r| (number, r)));
            segments.insert(
                number,
                Segment {
                    file: Arc::new(file),
                    path,
                    big,
                    pins: 0,
                    done_refs: HashSet::new(),
                    keep: damaged,
                },
            );
        }
        let next_segment = segments.keys().next_back().map_or(1, |n| n + 1);
        let mut inner = Inner {
            segments,
            active: 0,
            active_len: 0,
            active_prefilled: 0,
            next_segment,
            next_seq: records
                .iter()
                .map(|(_, r)| r.seq)
                .max()
                .map_or(1, |s| s + 1),
            appended: 0,
            mails: HashMap::new(),
            waiting: VecDeque::new(),
            queued: HashSet::new(),
            leased: HashMap::new(),
            delayed: Vec::new(),
            committing_big: HashSet::new(),
        };
        replay(&mut inner, records);
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            segment_max,
            inner: Mutex::new(inner),
            wake: Condvar::new(),
            commits: Arc::default(),
            receiving: Default::default(),
        });
        let (weak, commits) = (Arc::downgrade(&shared), shared.commits.clone());
        std::thread::Builder::new()
            .name("spool-flusher".into())
            .spawn(move || flusher(weak, &commits))?;
        {
            let mut inner = lock(&shared.inner);
            shared.new_active_segment(&mut inner)?;
            let mut live: Vec<(u64, String)> = inner
                .mails
                .iter()
                .map(|(n, e)| (e.seq, n.clone()))
                .collect();
            live.sort();
            inner.waiting = live.into_iter().map(|(_, name)| name).collect();
            inner.queued = inner.waiting.iter().cloned().collect();
            shared.collect_garbage(&mut inner)?;
        }
        let spool = LogSpool {
            shared,
            _lock: lock_file,
        };
        spool.import_mail_files(dir)?;
        Ok(spool)
    }

    /// Moves mails of the one-file-per-mail format into the log.
    fn import_mail_files(&self, dir: &Path) -> Result<()> {
        let has_mail_files = fs::read_dir(dir)?.any(|e| {
            e.ok().is_some_and(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.ends_with(".mail") || name.ends_with(".free")
            })
        });
        if !has_mail_files {
            return Ok(());
        }
        let old = FileMailRepository::open(dir)?;
        let names = old.list()?;
        tracing::info!(spool = %dir.display(), mails = names.len(), "importing spooled mails into the log");
        for name in &names {
            if let Some((mail, _)) = old.retrieve_checked(name, true)? {
                self.store(&mail)?;
            }
        }
        // Durable in the log (each store waited for it): the old files can go.
        for name in &names {
            old.remove(name)?;
        }
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|x| x == "free") {
                let _ = fs::remove_file(path);
            }
        }
        Ok(())
    }
}

/// How long a passive waiter waits for another writer's `fdatasync` before the flusher
/// starts one.
const PASSIVE_DELAY: Duration = Duration::from_micros(100);

/// Makes the appends of passive waiters durable when no incoming mail does it for them.
/// Ends once the spool is dropped.
fn flusher(spool: std::sync::Weak<Shared>, commits: &Commits) {
    loop {
        let wanted = {
            let sync = lock(&commits.sync);
            let (sync, _) = commits
                .flush_needed
                .wait_timeout_while(sync, Duration::from_millis(200), |s| s.passive_waiters == 0)
                .unwrap_or_else(|p| p.into_inner());
            sync.passive_waiters > 0 && sync.poisoned.is_none()
        };
        let Some(shared) = spool.upgrade() else {
            return;
        };
        if wanted {
            std::thread::sleep(PASSIVE_DELAY);
            let target = lock(&shared.inner).appended;
            // A failure poisons the spool; the waiters see it.
            let _ = shared.wait_durable(target);
        }
    }
}

/// Locks the spool directory for this process: a second process on the same spool would
/// delete segments the first one still writes.
fn lock_directory(dir: &Path) -> Result<File> {
    use std::os::fd::AsRawFd;
    let file = File::create(dir.join("lock"))?;
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let error = io::Error::last_os_error();
        return Err(io::Error::new(
            error.kind(),
            format!("{} is in use by another process: {error}", dir.display()),
        )
        .into());
    }
    Ok(file)
}

/// Rebuilds the index from the records of every segment.
fn replay(inner: &mut Inner, records: Vec<(u64, Scanned)>) {
    #[derive(Default)]
    struct Seen {
        mail: Option<(u64, u64, Envelope, Content)>,
        envelope: Option<(u64, u64, Envelope)>,
        done: Option<(u64, u64)>,
        mail_segments: Vec<u64>,
    }
    let mut seen: HashMap<String, Seen> = HashMap::new();
    for (segment, record) in records {
        let s = seen.entry(record.name).or_default();
        match record.kind {
            KIND_MAIL => {
                let (offset, len) = record.message.expect("MAIL records have a message");
                s.mail_segments.push(segment);
                if s.mail.as_ref().is_none_or(|m| m.0 < record.seq) {
                    let content = Content {
                        segment,
                        offset,
                        len,
                    };
                    let envelope = record.envelope.expect("MAIL records have an envelope");
                    s.mail = Some((record.seq, segment, envelope, content));
                }
            }
            KIND_ENVELOPE => {
                if s.envelope.as_ref().is_none_or(|e| e.0 < record.seq) {
                    let envelope = record.envelope.expect("ENVELOPE records have one");
                    s.envelope = Some((record.seq, segment, envelope));
                }
            }
            _ => {
                if s.done.is_none_or(|d| d.0 < record.seq) {
                    s.done = Some((record.seq, segment));
                }
            }
        }
    }
    for (name, s) in seen {
        let Some((mail_seq, mail_segment, mail_envelope, content)) = s.mail else {
            continue;
        };
        if let Some((_, done_segment)) = s.done.filter(|d| d.0 > mail_seq) {
            // Ended: its DONE must outlive every MAIL record of it.
            if let Some(segment) = inner.segments.get_mut(&done_segment) {
                segment.done_refs.extend(
                    s.mail_segments
                        .iter()
                        .copied()
                        .filter(|&m| m != done_segment),
                );
            }
            continue;
        }
        let (envelope_segment, envelope) = match s.envelope {
            Some((seq, segment, envelope)) if seq > mail_seq => (segment, envelope),
            _ => (mail_segment, mail_envelope),
        };
        pin(inner, content.segment);
        pin(inner, envelope_segment);
        inner.mails.insert(
            name,
            Entry {
                seq: mail_seq,
                content,
                envelope,
                envelope_segment,
                mail_segments: s.mail_segments,
            },
        );
    }
}

fn pin(inner: &mut Inner, segment: u64) {
    if let Some(s) = inner.segments.get_mut(&segment) {
        s.pins += 1;
    }
}

fn unpin(inner: &mut Inner, segment: u64) {
    if let Some(s) = inner.segments.get_mut(&segment) {
        s.pins -= 1;
    }
}

impl Shared {
    /// Makes every append so far durable. A failure poisons the spool: after a failed
    /// `fdatasync` the kernel may have dropped the pages, and a later one would succeed
    /// without writing them.
    fn sync_appended(&self, inner: &Inner) -> io::Result<()> {
        if lock(&self.commits.sync).durable >= inner.appended {
            return Ok(());
        }
        let result = match inner.segments.get(&inner.active) {
            Some(active) => active.file.sync_data(),
            None => Ok(()),
        };
        let mut sync = lock(&self.commits.sync);
        match &result {
            Ok(()) => sync.durable = sync.durable.max(inner.appended),
            Err(e) => sync.poisoned = Some(e.kind()),
        }
        self.commits.synced.notify_all();
        result
    }

    /// Starts a new active segment (the old one, if any, made durable first).
    fn new_active_segment(&self, inner: &mut Inner) -> io::Result<()> {
        self.sync_appended(inner)?;
        let number = inner.next_segment;
        inner.next_segment += 1;
        let path = segment_path(&self.dir, number, false);
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        sync_dir(&self.dir)?;
        inner.segments.insert(
            number,
            Segment {
                file: Arc::new(file),
                path,
                big: false,
                pins: 0,
                done_refs: HashSet::new(),
                keep: false,
            },
        );
        inner.active = number;
        inner.active_len = 0;
        inner.active_prefilled = 0;
        Ok(())
    }

    /// Starts a new active segment when this one is full, and then compacts.
    fn make_room(&self, inner: &mut Inner) -> io::Result<()> {
        if inner.active_len >= self.segment_max {
            self.new_active_segment(inner)?;
            self.compact(inner)?;
        }
        Ok(())
    }

    /// Appends a record to the active segment. Returns the ticket to wait on for durability
    /// and where the payload starts.
    fn append(
        &self,
        inner: &mut Inner,
        kind: u8,
        name: &str,
        payload: &[&[u8]],
    ) -> io::Result<(u64, u64)> {
        let payload_len: usize = payload.iter().map(|p| p.len()).sum();
        let mut crc = crc32fast::Hasher::new();
        crc.update(name.as_bytes());
        for part in payload {
            crc.update(part);
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let mut record = Vec::with_capacity(HEADER + name.len() + payload_len);
        record.extend_from_slice(&header(
            inner.active,
            kind,
            seq,
            name,
            payload_len as u64,
            crc.finalize(),
        ));
        record.extend_from_slice(name.as_bytes());
        for part in payload {
            record.extend_from_slice(part);
        }
        let at = inner.active_len;
        let file = &inner.segments[&inner.active].file;
        let end = at + record.len() as u64;
        if end > inner.active_prefilled {
            // Appends then overwrite allocated blocks and never change the file's size, so an
            // `fdatasync` writes the data alone, not the inode too: a third less latency.
            let fill = PREFILL_STEP.max(end - inner.active_prefilled);
            let zeros = vec![0u8; fill as usize];
            file.write_all_at(&zeros, inner.active_prefilled)?;
            inner.active_prefilled += fill;
        }
        // On failure, whatever part was written lies past the end, where the next append
        // writes over it.
        file.write_all_at(&record, at)?;
        inner.active_len += record.len() as u64;
        inner.appended += 1;
        Ok((inner.appended, at + (HEADER + name.len()) as u64))
    }

    /// Returns once the append numbered `ticket` is durable, sharing `fdatasync`s between
    /// concurrent callers.
    fn wait_durable(&self, ticket: u64) -> io::Result<()> {
        let mut sync = lock(&self.commits.sync);
        loop {
            if let Some(kind) = sync.poisoned {
                return Err(io::Error::new(
                    kind,
                    "an earlier fdatasync of the spool failed",
                ));
            }
            if sync.durable >= ticket {
                return Ok(());
            }
            if sync.running {
                sync = self
                    .commits
                    .synced
                    .wait(sync)
                    .unwrap_or_else(|p| p.into_inner());
                continue;
            }
            sync.running = true;
            drop(sync);
            if self.receiving.load(std::sync::atomic::Ordering::Relaxed) > 0 {
                // Other messages are on their way: wait a moment so that this fdatasync
                // covers them too (a third less CPU per mail when many sessions send).
                std::thread::sleep(COMMIT_DELAY);
            }
            let (covers, file) = {
                let inner = lock(&self.inner);
                (inner.appended, inner.segments[&inner.active].file.clone())
            };
            let result = file.sync_data();
            sync = lock(&self.commits.sync);
            sync.running = false;
            match &result {
                Ok(()) => sync.durable = sync.durable.max(covers),
                Err(e) => sync.poisoned = Some(e.kind()),
            }
            self.commits.synced.notify_all();
        }
    }

    /// Returns once the append numbered `ticket` is durable, without starting an `fdatasync`
    /// for it: under load the next group commit of incoming mail covers it at no cost, and
    /// otherwise the flusher thread syncs after [`PASSIVE_DELAY`]. For processor hops, whose
    /// worker can wait a little longer than an SMTP client.
    fn wait_durable_passively(&self, ticket: u64) -> io::Result<()> {
        let mut sync = lock(&self.commits.sync);
        sync.passive_waiters += 1;
        self.commits.flush_needed.notify_one();
        let result = loop {
            if let Some(kind) = sync.poisoned {
                break Err(io::Error::new(
                    kind,
                    "an earlier fdatasync of the spool failed",
                ));
            }
            if sync.durable >= ticket {
                break Ok(());
            }
            sync = self
                .commits
                .synced
                .wait(sync)
                .unwrap_or_else(|p| p.into_inner());
        };
        sync.passive_waiters -= 1;
        result
    }

    /// Writes a MAIL record for `mail` (small: appended; large: a segment of its own) and
    /// indexes it. Returns the ticket to wait on (0 when already durable).
    fn write_mail(&self, mail: &Mail, envelope: &Envelope) -> io::Result<u64> {
        let size = mail.message.size();
        if size as usize <= INLINE_MAX {
            let mut message = Vec::with_capacity(size as usize);
            mail.message.reader()?.read_to_end(&mut message)?;
            let mut inner = lock(&self.inner);
            self.make_room(&mut inner)?;
            return self.append_mail(&mut inner, mail.name(), &message, envelope);
        }
        let mut big = BigWriter::create(&self.dir, mail.name())?;
        io::copy(&mut mail.message.reader()?, &mut big)?;
        self.commit_big(big, envelope)?;
        Ok(0)
    }

    /// Appends a small MAIL record and indexes it.
    fn append_mail(
        &self,
        inner: &mut Inner,
        name: &str,
        message: &[u8],
        envelope: &Envelope,
    ) -> io::Result<u64> {
        let json = envelope_json(envelope)?;
        let json_len = (json.len() as u32).to_le_bytes();
        let seq = inner.next_seq;
        let (ticket, payload) =
            self.append(inner, KIND_MAIL, name, &[message, &json, &json_len])?;
        let content = Content {
            segment: inner.active,
            offset: payload,
            len: message.len() as u64,
        };
        self.index_mail(inner, name, seq, content, envelope.clone());
        Ok(ticket)
    }

    /// Makes a streamed large mail durable as its own segment and indexes it.
    fn commit_big(&self, big: BigWriter, envelope: &Envelope) -> io::Result<()> {
        let mut inner = lock(&self.inner);
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let number = inner.next_segment;
        inner.next_segment += 1;
        // Until indexed, compaction must not copy the older version with a later seq.
        inner.committing_big.insert(envelope.name.clone());
        drop(inner);
        let path = segment_path(&self.dir, number, true);
        let finished = big
            .finish(envelope, number, seq, &path)
            .and_then(|done| sync_dir(&self.dir).map(|()| done));
        let mut inner = lock(&self.inner);
        inner.committing_big.remove(&envelope.name);
        let (file, content) = finished?;
        inner.segments.insert(
            number,
            Segment {
                file: Arc::new(file),
                path,
                big: true,
                pins: 0,
                done_refs: HashSet::new(),
                keep: false,
            },
        );
        let content = Content {
            segment: number,
            ..content
        };
        self.index_mail(&mut inner, &envelope.name, seq, content, envelope.clone());
        Ok(())
    }

    /// Points the index at a new MAIL record.
    fn index_mail(
        &self,
        inner: &mut Inner,
        name: &str,
        seq: u64,
        content: Content,
        envelope: Envelope,
    ) {
        // Once for the message, once for the envelope that comes with it.
        pin(inner, content.segment);
        pin(inner, content.segment);
        let mut mail_segments = vec![content.segment];
        if let Some(old) = inner.mails.remove(name) {
            unpin(inner, old.content.segment);
            unpin(inner, old.envelope_segment);
            mail_segments.extend(
                old.mail_segments
                    .into_iter()
                    .filter(|s| *s != content.segment),
            );
        }
        inner.mails.insert(
            name.to_string(),
            Entry {
                seq,
                content,
                envelope,
                envelope_segment: content.segment,
                mail_segments,
            },
        );
    }

    /// Deletes every segment nothing needs any more.
    fn collect_garbage(&self, inner: &mut Inner) -> io::Result<()> {
        loop {
            let deletable: Vec<u64> = inner
                .segments
                .iter()
                .filter(|(number, s)| {
                    **number != inner.active
                        && !s.keep
                        && s.pins == 0
                        && s.done_refs.iter().all(|r| !inner.segments.contains_key(r))
                })
                .map(|(number, _)| *number)
                .collect();
            if deletable.is_empty() {
                return Ok(());
            }
            // What superseded these segments' records (new MAIL and ENVELOPE records, DONE
            // records) must be on disk before the segments go.
            self.sync_appended(inner)?;
            for number in deletable {
                if !inner.segments[&number].done_refs.is_empty() {
                    // The deletions its DONE records stood in for must be durable first.
                    sync_dir(&self.dir)?;
                }
                fs::remove_file(&inner.segments[&number].path)?;
                inner.segments.remove(&number);
                for entry in inner.mails.values_mut() {
                    entry.mail_segments.retain(|s| *s != number);
                }
            }
        }
    }

    /// Past [`MAX_SEGMENTS`] small segments, writes the live mails of the oldest again.
    fn compact(&self, inner: &mut Inner) -> io::Result<()> {
        let small: Vec<u64> = inner
            .segments
            .iter()
            .filter(|(n, s)| !s.big && **n != inner.active)
            .map(|(n, _)| *n)
            .collect();
        if small.len() < MAX_SEGMENTS {
            return Ok(());
        }
        let oldest = small[0];
        let moving: Vec<String> = inner
            .mails
            .iter()
            .filter(|(name, e)| {
                (e.content.segment == oldest || e.envelope_segment == oldest)
                    && !inner.committing_big.contains(*name)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in moving {
            let entry = &inner.mails[&name];
            let envelope = entry.envelope.clone();
            if entry.content.segment == oldest {
                let Content { offset, len, .. } = entry.content;
                let mut message = vec![0u8; len as usize];
                inner.segments[&oldest]
                    .file
                    .read_exact_at(&mut message, offset)?;
                let seq = inner.next_seq;
                let json = envelope_json(&envelope)?;
                let json_len = (json.len() as u32).to_le_bytes();
                let (_, payload) =
                    self.append(inner, KIND_MAIL, &name, &[&message, &json, &json_len])?;
                let content = Content {
                    segment: inner.active,
                    offset: payload,
                    len,
                };
                self.index_mail(inner, &name, seq, content, envelope);
            } else {
                self.append_envelope(inner, &name, &envelope)?;
            }
        }
        self.sync_appended(inner)?;
        self.collect_garbage(inner)
    }

    /// Appends an ENVELOPE record (a hop) and points the index at it.
    fn append_envelope(
        &self,
        inner: &mut Inner,
        name: &str,
        envelope: &Envelope,
    ) -> io::Result<u64> {
        let json = envelope_json(envelope)?;
        let (ticket, _) = self.append(inner, KIND_ENVELOPE, name, &[&json])?;
        let active = inner.active;
        pin(inner, active);
        let entry = inner
            .mails
            .get_mut(name)
            .expect("appended for an indexed mail");
        let old = std::mem::replace(&mut entry.envelope_segment, active);
        entry.envelope = envelope.clone();
        unpin(inner, old);
        Ok(ticket)
    }

    /// The mail called `name`, read from its segment.
    fn mail(&self, inner: &Inner, name: &str) -> io::Result<Option<Mail>> {
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
}

/// A large mail being streamed into a segment of its own: `<name>.<n>.log.tmp` holds a
/// placeholder header, the name, then the message; [`BigWriter::finish`] adds the envelope,
/// writes the real header, fsyncs and renames. Dropped unfinished, it removes its file.
struct BigWriter {
    tmp: PathBuf,
    out: BufWriter<File>,
    name: String,
    /// CRC of the name and of the payload so far.
    crc: crc32fast::Hasher,
    payload_len: u64,
}

impl BigWriter {
    fn create(dir: &Path, name: &str) -> io::Result<BigWriter> {
        let tmp = dir.join(format!("{name}.{}.log.tmp", super::fsutil::unique_suffix()));
        // Readable too: the finished segment is read through this very file.
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        let mut out = BufWriter::with_capacity(64 * 1024, file);
        out.write_all(&[0u8; HEADER])?;
        out.write_all(name.as_bytes())?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(name.as_bytes());
        Ok(BigWriter {
            tmp,
            out,
            name: name.to_string(),
            crc,
            payload_len: 0,
        })
    }

    /// Completes the record, makes it durable and renames it to `path`. Returns the file and
    /// where the message is in it (the segment number is the caller's to fill in).
    fn finish(
        mut self,
        envelope: &Envelope,
        segment: u64,
        seq: u64,
        path: &Path,
    ) -> io::Result<(File, Content)> {
        let message_len = self.payload_len;
        let json = envelope_json(envelope)?;
        self.write_all(&json)?;
        self.write_all(&(json.len() as u32).to_le_bytes())?;
        self.out.flush()?;
        let file = self.out.get_ref().try_clone()?;
        let h = header(
            segment,
            KIND_MAIL,
            seq,
            &self.name,
            self.payload_len,
            self.crc.clone().finalize(),
        );
        file.write_all_at(&h, 0)?;
        file.sync_all()?;
        fs::rename(&self.tmp, path)?;
        let offset = (HEADER + self.name.len()) as u64;
        Ok((
            file,
            Content {
                segment: 0,
                offset,
                len: message_len,
            },
        ))
    }
}

impl Write for BigWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.crc.update(&buf[..n]);
        self.payload_len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl Drop for BigWriter {
    fn drop(&mut self) {
        // Renamed when finished; otherwise never acknowledged.
        let _ = fs::remove_file(&self.tmp);
    }
}

/// A message being received into the spool: in memory up to [`INLINE_MAX`], then streamed
/// into a segment of its own.
struct LogIncoming {
    shared: Arc<Shared>,
    name: String,
    buffer: Vec<u8>,
    big: Option<BigWriter>,
    /// Whether it no longer counts among the messages being received.
    counted_out: bool,
}

impl Write for LogIncoming {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(big) = &mut self.big {
            return big.write(buf);
        }
        self.buffer.extend_from_slice(buf);
        if self.buffer.len() > INLINE_MAX {
            let mut big = BigWriter::create(&self.shared.dir, &self.name)?;
            big.write_all(&self.buffer)?;
            self.buffer = Vec::new();
            self.big = Some(big);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.big.as_mut().map_or(Ok(()), Write::flush)
    }
}

impl LogIncoming {
    /// Counts this message out of those being received (once).
    fn stop_receiving(&mut self) {
        if !std::mem::replace(&mut self.counted_out, true) {
            self.shared
                .receiving
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Drop for LogIncoming {
    fn drop(&mut self) {
        self.stop_receiving();
    }
}

impl IncomingMessage for LogIncoming {
    fn name(&self) -> &str {
        &self.name
    }

    fn commit(mut self: Box<Self>, mut envelope: Envelope) -> Result<()> {
        envelope.name = self.name.clone();
        envelope.touch();
        let shared = self.shared.clone();
        self.stop_receiving();
        match self.big.take() {
            Some(big) => {
                envelope.size = big.payload_len;
                shared.commit_big(big, &envelope)?;
            }
            None => {
                envelope.size = self.buffer.len() as u64;
                let ticket = {
                    let mut inner = lock(&shared.inner);
                    shared.make_room(&mut inner)?;
                    shared.append_mail(&mut inner, &self.name, &self.buffer, &envelope)?
                };
                if let Err(e) = shared.wait_durable(ticket) {
                    shared.forget(&self.name);
                    return Err(e.into());
                }
            }
        }
        shared.enqueue(&self.name);
        Ok(())
    }
}

impl Shared {
    /// Queues a mail for the workers.
    fn enqueue(&self, name: &str) {
        let mut inner = lock(&self.inner);
        if inner.mails.contains_key(name)
            && !inner.leased.contains_key(name)
            && inner.queued.insert(name.to_string())
        {
            inner.waiting.push_back(name.to_string());
            self.wake.notify_one();
        }
    }

    /// Drops a mail from the index whose record could not be made durable: it was never
    /// accepted. (If the record reached the disk anyway, a restart processes it: a duplicate
    /// at worst.)
    fn forget(&self, name: &str) {
        let mut inner = lock(&self.inner);
        if let Some(entry) = inner.mails.remove(name) {
            unpin(&mut inner, entry.content.segment);
            unpin(&mut inner, entry.envelope_segment);
        }
    }
}

impl MailRepository for LogSpool {
    fn store(&self, mail: &Mail) -> Result<()> {
        validate_mail_name(mail.name())?;
        let shared = &self.shared;
        let mut envelope = mail.envelope.clone();
        envelope.size = mail.message.size();
        let (held, exists) = {
            let inner = lock(&shared.inner);
            (
                inner.leased.get(mail.name()).cloned(),
                inner.mails.contains_key(mail.name()),
            )
        };
        let hop = held.is_some();
        let ticket = if held.is_some_and(|form| form == MessageForm::of(mail)) && exists {
            // A hop of the leaseholder with the message unchanged: the envelope alone.
            let mut inner = lock(&shared.inner);
            shared.make_room(&mut inner)?;
            if inner.mails.contains_key(mail.name()) {
                shared.append_envelope(&mut inner, mail.name(), &envelope)?
            } else {
                drop(inner);
                shared.write_mail(mail, &envelope)?
            }
        } else {
            shared.write_mail(mail, &envelope)?
        };
        if hop {
            shared.wait_durable_passively(ticket)?;
        } else {
            shared.wait_durable(ticket)?;
        }
        let mut inner = lock(&shared.inner);
        if let Some(form) = inner.leased.get_mut(mail.name()) {
            *form = MessageForm::of(mail);
        } else {
            drop(inner);
            shared.enqueue(mail.name());
        }
        Ok(())
    }

    fn retrieve(&self, name: &str) -> Result<Option<Mail>> {
        validate_mail_name(name)?;
        let inner = lock(&self.shared.inner);
        Ok(self.shared.mail(&inner, name)?)
    }

    fn remove(&self, name: &str) -> Result<bool> {
        validate_mail_name(name)?;
        let shared = &self.shared;
        let mut inner = lock(&shared.inner);
        inner.leased.remove(name);
        inner.queued.remove(name);
        if !inner.mails.contains_key(name) {
            return Ok(false);
        }
        shared.make_room(&mut inner)?;
        // Not waited for: lost in a crash, the mail is processed again.
        shared.append(&mut inner, KIND_DONE, name, &[])?;
        let entry = inner.mails.remove(name).expect("checked above");
        let active = inner.active;
        let refs = entry.mail_segments.iter().copied().filter(|s| *s != active);
        let active_segment = inner.segments.get_mut(&active).expect("active segment");
        active_segment.done_refs.extend(refs);
        unpin(&mut inner, entry.content.segment);
        unpin(&mut inner, entry.envelope_segment);
        shared.collect_garbage(&mut inner)?;
        Ok(true)
    }

    fn list(&self) -> Result<Vec<String>> {
        let inner = lock(&self.shared.inner);
        let mut names: Vec<(u64, &String)> = inner.mails.iter().map(|(n, e)| (e.seq, n)).collect();
        names.sort();
        Ok(names.into_iter().map(|(_, n)| n.clone()).collect())
    }

    fn incoming(&self) -> Result<Box<dyn IncomingMessage>> {
        self.shared
            .receiving
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Box::new(LogIncoming {
            shared: self.shared.clone(),
            name: crate::new_mail_name(),
            buffer: Vec::new(),
            big: None,
            counted_out: false,
        }))
    }
}

impl SpoolRepository for LogSpool {
    fn lease(&self, timeout: Duration) -> Result<Option<Mail>> {
        let shared = &self.shared;
        let deadline = Instant::now() + timeout;
        let mut inner = lock(&shared.inner);
        loop {
            let now = Instant::now();
            let (due, later): (Vec<_>, Vec<_>) =
                inner.delayed.drain(..).partition(|(at, _)| *at <= now);
            inner.delayed = later;
            inner.waiting.extend(due.into_iter().map(|(_, name)| name));
            while let Some(name) = inner.waiting.pop_front() {
                if !inner.queued.remove(&name) {
                    continue;
                }
                match shared.mail(&inner, &name) {
                    Ok(Some(mail)) => {
                        inner.leased.insert(name, MessageForm::of(&mail));
                        return Ok(Some(mail));
                    }
                    // Removed since it was queued.
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(mail = %name, error = %e, "cannot read spooled mail; retrying later");
                        inner.queued.insert(name.clone());
                        inner.delayed.push((now + Duration::from_secs(10), name));
                    }
                }
            }
            if now >= deadline {
                return Ok(None);
            }
            let next_due = inner.delayed.iter().map(|(at, _)| *at).min();
            let wait = (deadline - now)
                .min(next_due.map_or(deadline - now, |at| at.saturating_duration_since(now)));
            inner = shared
                .wake
                .wait_timeout(inner, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn release(&self, name: &str, retry_after: Duration) {
        let mut inner = lock(&self.shared.inner);
        if inner.leased.remove(name).is_some()
            && inner.mails.contains_key(name)
            && inner.queued.insert(name.to_string())
        {
            if retry_after.is_zero() {
                inner.waiting.push_back(name.to_string());
            } else {
                inner
                    .delayed
                    .push((Instant::now() + retry_after, name.to_string()));
            }
            self.shared.wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailroom_mailet::{MailAddress, Message};

    fn mail(name: &str, body: &[u8]) -> Mail {
        let envelope = Envelope::new(
            name,
            None,
            vec![MailAddress::parse("a@example.org").unwrap()],
        );
        let mut bytes = b"Subject: log\r\n\r\n".to_vec();
        bytes.extend_from_slice(body);
        Mail::new(envelope, Message::from_bytes(&bytes))
    }

    fn incoming(spool: &LogSpool, body: &[u8]) -> String {
        let mut incoming = spool.incoming().unwrap();
        let name = incoming.name().to_string();
        incoming.write_all(b"Subject: in\r\n\r\n").unwrap();
        incoming.write_all(body).unwrap();
        incoming.commit(Envelope::new("x", None, vec![])).unwrap();
        name
    }

    /// Changes one octet of the `index`th record of a segment, past its header.
    fn damage_record(segment: &Path, index: usize) {
        let bytes = fs::read(segment).unwrap();
        let at = bytes
            .windows(MAGIC.len())
            .enumerate()
            .filter(|(_, w)| w == MAGIC)
            .nth(index)
            .unwrap()
            .0;
        let file = File::options().write(true).open(segment).unwrap();
        file.write_all_at(b"?", (at + HEADER + 3) as u64).unwrap();
    }

    /// The oldest small segment.
    fn first_segment(dir: &Path) -> PathBuf {
        dir.join(
            segments(dir)
                .into_iter()
                .find(|n| n.starts_with("seg-"))
                .unwrap(),
        )
    }

    fn segments(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let spool = crate::Blocking::new(LogSpool::open(dir.path()).unwrap());
        crate::conformance::mail_repository(&spool).await;
        let dir = tempfile::tempdir().unwrap();
        let spool = crate::Blocking::new(LogSpool::open(dir.path()).unwrap());
        crate::conformance::spool_repository(&spool).await;
    }

    #[test]
    fn mails_hops_and_removals_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let big_body = vec![b'x'; INLINE_MAX + 10];
        let (small, big, gone) = {
            let spool = LogSpool::open(dir.path()).unwrap();
            let small = incoming(&spool, b"small\r\n");
            let big = incoming(&spool, &big_body);
            let gone = incoming(&spool, b"gone\r\n");
            // A hop of a leased mail, and a removal.
            let mut leased = spool.lease(Duration::from_secs(1)).unwrap().unwrap();
            assert_eq!(leased.name(), small);
            leased.set_state("transport");
            spool.store(&leased).unwrap();
            assert!(spool.remove(&gone).unwrap());
            (small, big, gone)
        };
        assert!(segments(dir.path()).iter().any(|n| n.starts_with("big-")));
        let spool = LogSpool::open(dir.path()).unwrap();
        assert_eq!(spool.list().unwrap(), [small.clone(), big.clone()]);
        let back = spool.retrieve(&small).unwrap().unwrap();
        assert_eq!(back.state(), "transport");
        assert_eq!(
            back.message.to_bytes().unwrap(),
            b"Subject: in\r\n\r\nsmall\r\n"
        );
        let back = spool.retrieve(&big).unwrap().unwrap();
        assert_eq!(back.envelope.size, big_body.len() as u64 + 15);
        assert!(back.message.to_bytes().unwrap().ends_with(&big_body));
        assert!(spool.retrieve(&gone).unwrap().is_none());
        // Removing the large mail deletes its segment.
        assert!(spool.remove(&big).unwrap());
        assert!(!segments(dir.path()).iter().any(|n| n.starts_with("big-")));
    }

    #[test]
    fn a_torn_tail_keeps_every_whole_record_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = {
            let spool = LogSpool::open(dir.path()).unwrap();
            (incoming(&spool, b"one\r\n"), incoming(&spool, b"two\r\n"))
        };
        let segment = first_segment(dir.path());
        // Damage the second record, as a crash during its write would.
        damage_record(&segment, 1);
        let spool = LogSpool::open(dir.path()).unwrap();
        assert_eq!(spool.list().unwrap(), [first]);
        assert!(spool.retrieve(&second).unwrap().is_none());
        // Appends go on in a new segment; nothing after the torn record is ever read.
        let third = incoming(&spool, b"three\r\n");
        drop(spool);
        let spool = LogSpool::open(dir.path()).unwrap();
        assert_eq!(spool.list().unwrap().len(), 2);
        assert!(spool.retrieve(&third).unwrap().is_some());
    }

    #[test]
    fn segments_rotate_and_are_deleted_or_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let spool = LogSpool::open_with(dir.path(), 4096).unwrap();
        // One mail stays for long; the others come and go.
        let kept = incoming(&spool, &[b'k'; 1000]);
        for _ in 0..100 {
            let name = incoming(&spool, &[b'x'; 1000]);
            assert!(spool.remove(&name).unwrap());
        }
        let count = |prefix: &str| {
            segments(dir.path())
                .iter()
                .filter(|n| n.starts_with(prefix))
                .count()
        };
        // About 25 segments were written; the kept mail moved forward, so few remain.
        assert!(
            count("seg-") <= MAX_SEGMENTS + 1,
            "{:?}",
            segments(dir.path())
        );
        drop(spool);
        let spool = LogSpool::open_with(dir.path(), 4096).unwrap();
        assert_eq!(spool.list().unwrap(), std::slice::from_ref(&kept));
        let back = spool.retrieve(&kept).unwrap().unwrap();
        assert!(back.message.to_bytes().unwrap().ends_with(&[b'k'; 1000]));
    }

    #[test]
    fn a_large_mail_is_readable_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let spool = LogSpool::open(dir.path()).unwrap();
        let big = incoming(&spool, &vec![b'x'; INLINE_MAX + 10]);
        assert!(spool.retrieve(&big).unwrap().is_some());
        let leased = spool.lease(Duration::from_secs(1)).unwrap().unwrap();
        assert_eq!(leased.name(), big);
        assert_eq!(leased.message.size(), INLINE_MAX as u64 + 10 + 15);
    }

    #[test]
    fn a_superseded_segment_outlives_the_records_that_supersede_it_until_they_are_durable() {
        let dir = tempfile::tempdir().unwrap();
        let spool = LogSpool::open_with(dir.path(), 4096).unwrap();
        let m = incoming(&spool, &[b'm'; 3000]);
        let y = incoming(&spool, &[b'y'; 1500]);
        let z = incoming(&spool, &[b'z'; 100]); // in the next segment
        let old_segment = lock(&spool.shared.inner).mails[&m].content.segment;
        assert_ne!(
            old_segment,
            lock(&spool.shared.inner).mails[&z].content.segment
        );
        assert!(spool.remove(&y).unwrap());
        // The leaseholder stores m with a changed header; before it waits for durability,
        // another worker's removal collects garbage.
        let mut mail = spool.lease(Duration::from_secs(1)).unwrap().unwrap();
        assert_eq!(mail.name(), m);
        mail.message.set_header("X-Changed", "yes");
        let ticket = spool
            .shared
            .write_mail(&mail, &mail.envelope.clone())
            .unwrap();
        assert!(spool.remove(&z).unwrap());
        let durable = lock(&spool.shared.commits.sync).durable;
        assert!(
            segment_path(dir.path(), old_segment, false).exists() || durable >= ticket,
            "the only durable copy of a mail was deleted"
        );
    }

    #[test]
    fn one_process_per_spool() {
        let dir = tempfile::tempdir().unwrap();
        let spool = LogSpool::open(dir.path()).unwrap();
        let second = LogSpool::open(dir.path());
        assert!(
            second.is_err(),
            "a second spool on the same directory opened"
        );
        drop(spool);
        LogSpool::open(dir.path()).unwrap();
    }

    #[test]
    fn a_segment_damaged_in_the_middle_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = {
            let spool = LogSpool::open(dir.path()).unwrap();
            ["one", "two", "three"]
                .iter()
                .map(|body| incoming(&spool, body.as_bytes()))
                .collect()
        };
        let segment = first_segment(dir.path());
        damage_record(&segment, 1);
        let spool = LogSpool::open(dir.path()).unwrap();
        assert_eq!(spool.list().unwrap(), names[..1]);
        // The first mail leaves; the segment stays for an administrator.
        assert!(spool.remove(&names[0]).unwrap());
        drop(spool);
        let spool = LogSpool::open(dir.path()).unwrap();
        assert!(segment.exists());
        assert!(spool.list().unwrap().is_empty());
    }

    #[test]
    fn records_count_only_in_their_own_segment() {
        let dir = tempfile::tempdir().unwrap();
        let saved = tempfile::tempdir().unwrap();
        let name = {
            let spool = LogSpool::open(dir.path()).unwrap();
            incoming(&spool, b"once\r\n")
        };
        let original = first_segment(dir.path());
        fs::copy(&original, saved.path().join("old")).unwrap();
        {
            let spool = LogSpool::open(dir.path()).unwrap();
            assert!(spool.remove(&name).unwrap());
        }
        assert!(!original.exists());
        // Reopened, the spool no longer needs the removal's record either: only the new active
        // segment is left.
        drop(LogSpool::open(dir.path()).unwrap());
        assert_eq!(
            segments(dir.path())
                .iter()
                .filter(|n| n.starts_with("seg-"))
                .count(),
            1
        );
        // The old blocks show up in another file (after a power loss, say): the mail they hold
        // was removed and must not come back.
        fs::copy(
            saved.path().join("old"),
            segment_path(dir.path(), 999, false),
        )
        .unwrap();
        let spool = LogSpool::open(dir.path()).unwrap();
        assert!(spool.list().unwrap().is_empty());
    }

    #[test]
    fn imports_mails_of_the_file_format() {
        let dir = tempfile::tempdir().unwrap();
        let old = FileMailRepository::open(dir.path()).unwrap();
        old.store(&mail("old-1", b"hello\r\n")).unwrap();
        drop(old);
        let spool = LogSpool::open(dir.path()).unwrap();
        assert_eq!(spool.list().unwrap(), ["old-1"]);
        assert!(!segments(dir.path()).iter().any(|n| n.ends_with(".mail")));
        let leased = spool.lease(Duration::from_secs(1)).unwrap().unwrap();
        assert!(leased.message.to_bytes().unwrap().ends_with(b"hello\r\n"));
    }
}
