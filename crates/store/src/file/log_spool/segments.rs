//! Segments: appending records and their group commit, pins, the next segment prepared ahead
//! of time, compaction and deleting segments nothing needs.
//!
//! Slow work never runs under the spool's lock: zero-filling (of the next segment, and of the
//! active one ahead of the appends) is done by the `spool-segments` thread, and compaction and
//! garbage collection decide under the lock, do their I/O without it, then publish under it.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard, Weak};
use std::time::{Duration, SystemTime};

use mailroom_mailet::Envelope;

use super::record::{
    envelope_json, header, segment_path, time_octets, HEADER, KIND_ENVELOPE, KIND_ENVELOPE_AT,
    KIND_MAIL,
};
use super::{lock, Content, Inner, Shared, MAX_SEGMENTS};
use crate::file::fsutil::sync_dir;
use crate::file::group_commit::GroupCommit;
use crate::Result;

/// How much of a segment is filled with zeros at a time, ahead of the appends.
pub(super) const PREFILL_STEP: u64 = 4 * 1024 * 1024;

/// How long the writer about to `fdatasync` waits for others when more messages are being
/// received (PostgreSQL's `commit_delay`, applied only when there are `commit_siblings`).
const COMMIT_DELAY: Duration = Duration::from_micros(300);

/// How long a passive waiter waits for another writer's `fdatasync` before the flusher
/// starts one.
const PASSIVE_DELAY: Duration = Duration::from_micros(100);

pub(super) struct Segment {
    pub number: u64,
    pub file: Arc<File>,
    pub path: PathBuf,
    /// A segment of one large mail.
    pub big: bool,
    /// Shared by every [`Pin`] of this segment.
    pins: Arc<()>,
    /// Segments holding MAIL records of the mails this segment's DONE records ended.
    pub done_refs: HashSet<u64>,
    /// Never deleted: damaged, kept for an administrator.
    pub keep: bool,
    /// Being deleted by a garbage collection.
    deleting: bool,
}

/// A live reference to a segment (a mail's message or current envelope is there): the segment
/// is not deleted while one exists. Unpins on drop.
pub(super) struct Pin {
    segment: u64,
    _held: Arc<()>,
}

impl Pin {
    /// The pinned segment.
    pub fn segment(&self) -> u64 {
        self.segment
    }
}

impl Segment {
    pub fn new(number: u64, file: File, path: PathBuf, big: bool) -> Segment {
        Segment {
            number,
            file: Arc::new(file),
            path,
            big,
            pins: Arc::new(()),
            done_refs: HashSet::new(),
            keep: false,
            deleting: false,
        }
    }

    /// Creates small segment `number`, its first `prefill` octets zeros, durably in `dir`.
    pub fn prepare(dir: &Path, number: u64, prefill: u64) -> io::Result<Segment> {
        let path = segment_path(dir, number, false);
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        if let Err(e) = zero_fill(&file, 0, prefill).and_then(|()| sync_dir(dir)) {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        Ok(Segment::new(number, file, path, false))
    }

    pub fn pin(&self) -> Pin {
        Pin {
            segment: self.number,
            _held: self.pins.clone(),
        }
    }

    fn pinned(&self) -> bool {
        Arc::strong_count(&self.pins) > 1
    }
}

/// Writes `len` zeros at `at`. Appends then overwrite allocated blocks and never change the
/// file's size, so an `fdatasync` writes the data alone, not the inode too: a third less
/// latency.
fn zero_fill(file: &File, at: u64, len: u64) -> io::Result<()> {
    let zeros = vec![0u8; len.min(1 << 20) as usize];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(zeros.len() as u64);
        file.write_all_at(&zeros[..n as usize], at + done)?;
        done += n;
    }
    Ok(())
}

/// What the next group commit of the small segments syncs: segments retired since the last
/// one, and the active segment.
pub(super) struct SegmentFiles {
    retired: Vec<Arc<File>>,
    active: Arc<File>,
}

impl SegmentFiles {
    pub fn new(active: Arc<File>) -> Self {
        SegmentFiles {
            retired: Vec::new(),
            active,
        }
    }
}

fn sync_files((retired, active): (Vec<Arc<File>>, Arc<File>)) -> io::Result<()> {
    for file in retired {
        file.sync_data()?;
    }
    active.sync_data()
}

fn take_files(files: &mut SegmentFiles) -> (Vec<Arc<File>>, Arc<File>) {
    (std::mem::take(&mut files.retired), files.active.clone())
}

/// Makes the appends of passive waiters durable when no incoming mail does it for them.
/// Ends once the spool is dropped.
pub(super) fn flusher(spool: Weak<Shared>, commits: &GroupCommit<SegmentFiles>) {
    loop {
        let wanted = commits.wait_for_passive_waiters(Duration::from_millis(200));
        let Some(shared) = spool.upgrade() else {
            return;
        };
        if wanted {
            std::thread::sleep(PASSIVE_DELAY);
            // A failure poisons the spool; the waiters see it.
            let _ = shared.wait_durable(commits.written());
        }
    }
}

/// The length of a record of `name` with `payload`.
pub(super) fn record_len(name: &str, payload: &[&[u8]]) -> u64 {
    (HEADER + name.len() + payload.iter().map(|p| p.len()).sum::<usize>()) as u64
}

impl Shared {
    /// Returns once the append numbered `ticket` is durable, sharing `fdatasync`s between
    /// concurrent callers.
    pub fn wait_durable(&self, ticket: u64) -> io::Result<()> {
        // Other messages are on their way: wait a moment so that this fdatasync covers them
        // too (a third less CPU per mail when many sessions send).
        let delay = if self.receiving.load(Ordering::Relaxed) > 0 {
            COMMIT_DELAY
        } else {
            Duration::ZERO
        };
        self.commits
            .wait(ticket, delay, take_files, |files| Ok(sync_files(files)?))
    }

    /// Returns once the append numbered `ticket` is durable, without starting an `fdatasync`
    /// for it: under load the next group commit of incoming mail covers it at no cost, and
    /// otherwise the flusher thread syncs after [`PASSIVE_DELAY`]. For processor hops, whose
    /// worker can wait a little longer than an SMTP client.
    pub fn wait_durable_passively(&self, ticket: u64) -> io::Result<()> {
        self.commits.wait_passively(ticket)
    }

    /// Locks the spool for appending `len` octets: waits while the zero-filling of the active
    /// segment's next part, which the append would reach, is running.
    pub fn lock_for_append(&self, len: u64) -> MutexGuard<'_, Inner> {
        let mut inner = lock(&self.inner);
        while inner.prefilling == Some(inner.active)
            && inner.active_len + len > inner.active_prefilled
        {
            inner = self.room.wait(inner).unwrap_or_else(|p| p.into_inner());
        }
        inner
    }

    /// Appends a record to the active segment (locked with [`Shared::lock_for_append`] for at
    /// least its length). Returns the ticket to wait on for durability and where the payload
    /// starts.
    pub fn append(
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
        // On failure, whatever part was written lies past the end, where the next append
        // writes over it.
        file.write_all_at(&record, at)?;
        inner.active_len += record.len() as u64;
        if inner.active_len >= self.segment_max {
            self.full.store(true, Ordering::Relaxed);
        }
        if self.segment_work(inner).is_some() {
            self.room.notify_all();
        }
        let ticket = self.commits.add(|_| ());
        Ok((ticket, at + (HEADER + name.len()) as u64))
    }

    /// Appends a small MAIL record and indexes it.
    pub fn append_mail(
        &self,
        inner: &mut Inner,
        name: &str,
        message: &[u8],
        envelope_json: &[u8],
        envelope: &Envelope,
    ) -> io::Result<u64> {
        let json_len = (envelope_json.len() as u32).to_le_bytes();
        let seq = inner.next_seq;
        let (ticket, payload) =
            self.append(inner, KIND_MAIL, name, &[message, envelope_json, &json_len])?;
        let content = Content {
            segment: inner.active,
            offset: payload,
            len: message.len() as u64,
        };
        self.index_mail(inner, name, seq, content, envelope.clone());
        Ok(ticket)
    }

    /// Appends an ENVELOPE record (a hop), or an ENVELOPE_AT record when the mail is due
    /// later, and points the index at it.
    pub fn append_envelope(
        &self,
        inner: &mut Inner,
        name: &str,
        json: &[u8],
        envelope: &Envelope,
        next_attempt: Option<SystemTime>,
    ) -> io::Result<u64> {
        let (ticket, _) = match next_attempt {
            Some(at) => self.append(inner, KIND_ENVELOPE_AT, name, &[&time_octets(at), json])?,
            None => self.append(inner, KIND_ENVELOPE, name, &[json])?,
        };
        let pin = inner.segments[&inner.active].pin();
        let entry = inner
            .mails
            .get_mut(name)
            .expect("appended for an indexed mail");
        entry.envelope_pin = pin;
        entry.envelope = envelope.clone();
        entry.next_attempt = next_attempt;
        Ok(ticket)
    }

    /// The length of the envelope record [`Shared::append_envelope`] writes.
    pub fn envelope_record_len(name: &str, json: &[u8], next_attempt: Option<SystemTime>) -> u64 {
        record_len(name, &[json]) + if next_attempt.is_some() { 8 } else { 0 }
    }

    /// Before an append: when the active segment is full, makes the next one active (waiting,
    /// without the lock, for it to be prepared if it is not yet), then compacts and collects
    /// garbage, outside the lock.
    pub fn make_room(&self) -> crate::Result<()> {
        // Read without the lock: at worst one more record goes to a full segment.
        if !self.full.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut inner = lock(&self.inner);
        loop {
            if inner.active_len < self.segment_max {
                return Ok(());
            }
            if let Some((number, spare)) = inner.spare.take() {
                let file = spare.file.clone();
                let old = inner.segments[&inner.active].file.clone();
                inner.segments.insert(number, spare);
                inner.active = number;
                inner.active_len = 0;
                self.full.store(false, Ordering::Relaxed);
                inner.active_prefilled = self.prefill_step();
                // Anything appended to the old segment is synced by the next group commit.
                self.commits.with_pending(|files| {
                    files.retired.push(old);
                    files.active = file;
                });
                break;
            }
            if !inner.preparing {
                // The segments thread is behind: prepare it here, still without the lock.
                drop(inner);
                self.prepare_spare()?;
                inner = lock(&self.inner);
                continue;
            }
            inner = self.room.wait(inner).unwrap_or_else(|p| p.into_inner());
        }
        drop(inner);
        self.room.notify_all();
        self.compact()?;
        self.collect_garbage()
    }

    /// Creates the next small segment if none is ready or being made. Without the lock.
    fn prepare_spare(&self) -> io::Result<()> {
        let number = {
            let mut inner = lock(&self.inner);
            if inner.spare.is_some() || inner.preparing {
                return Ok(());
            }
            inner.preparing = true;
            inner.next_segment += 1;
            inner.next_segment - 1
        };
        let prepared = Segment::prepare(&self.dir, number, self.prefill_step());
        let mut inner = lock(&self.inner);
        inner.preparing = false;
        self.room.notify_all();
        inner.spare = Some((number, prepared?));
        Ok(())
    }

    /// The `spool-segments` thread: prepares the next segment once the active one is half
    /// full, and fills the active one with zeros ahead of the appends. Ends when the spool is
    /// dropped.
    pub fn prepare_spares(&self) {
        loop {
            let work = {
                let inner = lock(&self.inner);
                let mut inner = self
                    .room
                    .wait_timeout_while(inner, Duration::from_secs(1), |i| {
                        !i.closing && self.segment_work(i).is_none()
                    })
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                if inner.closing {
                    return;
                }
                let work = self.segment_work(&inner);
                if let Some(Work::Prefill { number, .. }) = work {
                    inner.prefilling = Some(number);
                }
                work
            };
            let result = match work {
                None => Ok(()),
                Some(Work::Spare) => self.prepare_spare(),
                Some(Work::Prefill { number, file, at }) => {
                    let result = zero_fill(&file, at, self.prefill_step());
                    let mut inner = lock(&self.inner);
                    inner.prefilling = None;
                    if result.is_ok() && inner.active == number {
                        inner.active_prefilled = at + self.prefill_step();
                    }
                    self.room.notify_all();
                    result
                }
            };
            if let Err(e) = result {
                tracing::error!(error = %e, "cannot prepare a spool segment; trying again in 10 s");
                let inner = lock(&self.inner);
                let _ = self
                    .room
                    .wait_timeout_while(inner, Duration::from_secs(10), |i| !i.closing);
            }
        }
    }

    /// How much is zero-filled at a time: [`PREFILL_STEP`], less for small test segments.
    pub fn prefill_step(&self) -> u64 {
        PREFILL_STEP.min(self.segment_max)
    }

    /// What the `spool-segments` thread should do now.
    fn segment_work(&self, inner: &Inner) -> Option<Work> {
        if inner.spare.is_none() && !inner.preparing && inner.active_len >= self.segment_max / 2 {
            return Some(Work::Spare);
        }
        let filled = inner.active_prefilled.max(inner.active_len);
        if inner.prefilling.is_none()
            && inner.active_len + self.prefill_step() / 2 > inner.active_prefilled
            && filled < self.segment_max
        {
            return Some(Work::Prefill {
                number: inner.active,
                file: inner.segments[&inner.active].file.clone(),
                at: filled,
            });
        }
        None
    }

    /// Deletes every segment nothing needs any more: decides under the lock, syncs and
    /// unlinks without it.
    pub fn collect_garbage(&self) -> Result<()> {
        loop {
            let doomed: Vec<(u64, PathBuf, bool)> = {
                let mut inner = lock(&self.inner);
                let inner = &mut *inner;
                let numbers: Vec<u64> = inner
                    .segments
                    .iter()
                    .filter(|(number, s)| {
                        **number != inner.active
                            && !s.keep
                            && !s.deleting
                            && !s.pinned()
                            && s.done_refs.iter().all(|r| !inner.segments.contains_key(r))
                    })
                    .map(|(number, _)| *number)
                    .collect();
                numbers
                    .into_iter()
                    .map(|n| {
                        let s = inner.segments.get_mut(&n).expect("listed above");
                        s.deleting = true;
                        (n, s.path.clone(), !s.done_refs.is_empty())
                    })
                    .collect()
            };
            if doomed.is_empty() {
                return Ok(());
            }
            let (deleted, result) = self.delete_segments(&doomed);
            let mut inner = lock(&self.inner);
            for (number, _, _) in &doomed {
                if deleted.contains(number) {
                    inner.segments.remove(number);
                    for entry in inner.mails.values_mut() {
                        entry.mail_segments.retain(|s| s != number);
                    }
                } else if let Some(s) = inner.segments.get_mut(number) {
                    s.deleting = false;
                }
            }
            result?;
        }
    }

    /// Unlinks segments; returns those deleted, and the first failure.
    fn delete_segments(&self, doomed: &[(u64, PathBuf, bool)]) -> (Vec<u64>, io::Result<()>) {
        let mut deleted = Vec::new();
        let result = (|| {
            // What superseded these segments' records (new MAIL and ENVELOPE records, DONE
            // records) must be on disk before the segments go.
            self.wait_durable(self.commits.written())?;
            if doomed.iter().any(|(_, _, has_done)| *has_done) {
                // The deletions their DONE records stood in for must be durable first.
                sync_dir(&self.dir)?;
            }
            for (number, path, _) in doomed {
                match fs::remove_file(path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => deleted.push(*number),
                }
            }
            Ok(())
        })();
        (deleted, result)
    }

    /// Past [`MAX_SEGMENTS`] small segments, writes the live mails of the oldest again:
    /// each message is read without the lock and appended under it.
    pub fn compact(&self) -> Result<()> {
        let (oldest, file, moving) = {
            let mut inner = lock(&self.inner);
            let small: Vec<u64> = inner
                .segments
                .iter()
                .filter(|(n, s)| !s.big && **n != inner.active && !s.deleting)
                .map(|(n, _)| *n)
                .collect();
            if small.len() < MAX_SEGMENTS || inner.compacting {
                return Ok(());
            }
            inner.compacting = true;
            let oldest = small[0];
            let moving: Vec<String> = inner
                .mails
                .iter()
                .filter(|(_, e)| e.content.segment == oldest || e.envelope_pin.segment() == oldest)
                .map(|(name, _)| name.clone())
                .collect();
            (oldest, inner.segments[&oldest].file.clone(), moving)
        };
        let result = self.move_mails(oldest, &file, moving);
        lock(&self.inner).compacting = false;
        result?;
        self.collect_garbage()
    }

    fn move_mails(&self, oldest: u64, file: &File, moving: Vec<String>) -> Result<()> {
        let mut last = 0;
        for name in moving {
            let content = match lock(&self.inner).mails.get(&name) {
                Some(e) if e.content.segment == oldest => Some(e.content),
                Some(_) => None,
                None => continue,
            };
            let message = match content {
                Some(Content { offset, len, .. }) => {
                    let mut message = vec![0u8; len as usize];
                    file.read_exact_at(&mut message, offset)?;
                    Some(message)
                }
                None => None,
            };
            let (envelope, next_attempt) = match lock(&self.inner).mails.get(&name) {
                Some(e) => (e.envelope.clone(), e.next_attempt),
                None => continue,
            };
            let json = envelope_json(&envelope)?;
            let len = message
                .as_ref()
                .map_or(0, |m| record_len(&name, &[m, &json, &[0; 4]]))
                + Self::envelope_record_len(&name, &json, next_attempt);
            let mut inner = self.lock_for_append(len);
            let inner = &mut *inner;
            // Changed meanwhile (a hop, a new version, a removal): nothing left to move, or
            // moved by that change already.
            let Some(entry) = inner.mails.get(&name) else {
                continue;
            };
            if entry.envelope != envelope
                || entry.next_attempt != next_attempt
                || inner.committing_big.contains(&name)
            {
                continue;
            }
            match (message, content) {
                (Some(message), Some(content))
                    if entry.content.segment == content.segment
                        && entry.content.offset == content.offset =>
                {
                    last = self.append_mail(inner, &name, &message, &json, &envelope)?;
                    if next_attempt.is_some() {
                        last =
                            self.append_envelope(inner, &name, &json, &envelope, next_attempt)?;
                    }
                }
                (None, None) if entry.envelope_pin.segment() == oldest => {
                    last = self.append_envelope(inner, &name, &json, &envelope, next_attempt)?;
                }
                _ => {}
            }
        }
        self.wait_durable(last)?;
        Ok(())
    }
}

/// Work of the `spool-segments` thread.
enum Work {
    /// Create the next segment.
    Spare,
    /// Fill `PREFILL_STEP` octets of the active segment with zeros from `at`.
    Prefill {
        number: u64,
        file: Arc<File>,
        at: u64,
    },
}
