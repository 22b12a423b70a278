//! Posting to the file news repository, in three steps, so that no reader sees an article
//! before it is durable and no number a reader saw is ever given again:
//!
//! 1. [`Inner::begin_post`], on the poster's thread: under the repository lock, the
//!    Message-ID is reserved and a number taken in each group; without the lock, the article
//!    is written to a temporary file, renamed into its first group (through the directory
//!    taken with the number, so a group removed and re-created meanwhile does not receive it)
//!    and linked into the others; under the lock again, its overview lines are appended and
//!    kept as *in flight*: in the file, invisible to readers, kept by a rewrite (cancel,
//!    expiry).
//! 2. Under the same lock as the appends, it is queued for the syncer thread ([`run_syncer`]),
//!    which runs one `syncfs` for every post queued meanwhile (a group commit without a
//!    thread per waiter).
//! 3. After the sync, the syncer publishes the batch (in-flight lines become entries, the
//!    Message-IDs enter the index, the groups' shown high moves up, the `.synced` marks
//!    advance) and only then tells each poster, through its [`Done`]. A failed sync publishes
//!    nothing: the articles' files are removed and every later post fails (the kernel may have
//!    dropped written pages, so nothing more may be acknowledged before a restart, whose
//!    recovery checks what is on disk).

use std::fs::File;
use std::io::{self, Write};
use std::sync::{Arc, MutexGuard};

use rustix::fs::{linkat, renameat, unlinkat, AtFlags, CWD};

use super::{append_line, now_secs, overview_line, unique_suffix, Entry, Inner, State, Synced};
use crate::news::{header_section, NewArticle, Overview};
use crate::{Result, StoreError};

/// The posts waiting for the syncer.
#[derive(Default)]
pub(super) struct Queue {
    pub(super) flights: Vec<(Flight, Done)>,
    /// The repository is closing: the syncer syncs what is queued, then stops.
    pub(super) stop: bool,
    /// Set for good by a failed sync.
    poisoned: Option<io::ErrorKind>,
}

/// How the syncer tells a poster that its article is durable and published (or not).
pub(super) enum Done {
    /// A thread blocked in the synchronous `post`.
    Blocking(std::sync::mpsc::SyncSender<Result<()>>),
    /// A task awaiting [`super::FileNewsRepository::post_async`].
    Async(tokio::sync::oneshot::Sender<Result<()>>),
}

impl Done {
    fn send(self, result: Result<()>) {
        // A poster that went away (its connection closed) needs no answer.
        let _ = match self {
            Done::Blocking(tx) => tx.send(result).map_err(drop),
            Done::Async(tx) => tx.send(result).map_err(drop),
        };
    }
}

/// One group a post took a number in.
struct Target {
    group: String,
    number: u64,
    incarnation: u64,
    dir: Arc<File>,
}

/// A post between its number and its publication.
pub(super) struct Flight {
    message_id: String,
    poster: Option<Arc<str>>,
    arrived: u64,
    targets: Vec<Target>,
    /// How many of the targets have the article file (a prefix): removed if the post fails.
    files: usize,
    /// The overview lengths its sync makes durable.
    lengths: Vec<Synced>,
}

impl Flight {
    /// The numbers it took, for the poster's answer.
    pub(super) fn numbers(&self) -> Vec<(String, u64)> {
        self.targets
            .iter()
            .map(|t| (t.group.clone(), t.number))
            .collect()
    }
}

impl Inner {
    /// Steps 1 and 2 of the module documentation: numbers, files, in-flight overview lines,
    /// and the queue, where the syncer answers through `done`. Returns the numbers taken. On
    /// failure nothing is left but used numbers, and `done` is dropped unanswered.
    pub(super) fn begin_post(
        &self,
        article: &NewArticle,
        done: Done,
    ) -> Result<Vec<(String, u64)>> {
        let mut flight = self.reserve(article)?;
        #[cfg(test)]
        self.faults.pause("reserved");
        let numbers = flight.numbers();
        match self.write(article, &mut flight) {
            Ok(state) => {
                // Queued under the lock of its appends, so that every line in an overview
                // file belongs to a post queued no later than the lines after it: the lengths
                // a batch records cover no line whose article the batch's sync leaves out.
                self.queue().flights.push((flight, done));
                drop(state);
                self.queued.notify_one();
                Ok(numbers)
            }
            Err(e) => {
                self.abandon(&flight);
                Err(e)
            }
        }
    }

    fn reserve(&self, article: &NewArticle) -> Result<Flight> {
        if let Some(kind) = self.queue().poisoned {
            return Err(io::Error::new(kind, "an earlier news sync failed").into());
        }
        let id = article.message_id.as_str();
        let mut state = self.state();
        if state.ids.contains_key(id) || state.posting.contains(id) {
            return Err(StoreError::AlreadyExists(id.to_string()));
        }
        let mut targets: Vec<Target> = Vec::new();
        for name in &article.groups {
            if targets.iter().any(|t| &t.group == name) {
                continue;
            }
            if let Some(g) = state.groups.get_mut(name) {
                // Taken now, whatever happens next: numbers are never given twice.
                g.high += 1;
                targets.push(Target {
                    group: name.clone(),
                    number: g.high,
                    incarnation: g.incarnation,
                    dir: g.dir_fd.clone(),
                });
            }
        }
        if targets.is_empty() {
            return Err(StoreError::NotFound(format!(
                "newsgroups {}",
                article.groups.join(",")
            )));
        }
        state.posting.insert(id.to_string());
        Ok(Flight {
            message_id: id.to_string(),
            poster: article.poster.as_deref().map(Arc::from),
            arrived: now_secs(),
            targets,
            files: 0,
            lengths: Vec::new(),
        })
    }

    /// The article's file, its links and its in-flight overview lines; returns with the
    /// repository lock still held since the appends.
    fn write(&self, article: &NewArticle, flight: &mut Flight) -> Result<MutexGuard<'_, State>> {
        let mut xref = format!("Xref: {}", self.xref_host);
        for t in &flight.targets {
            xref.push_str(&format!(" {}:{}", t.group, t.number));
        }
        xref.push_str("\r\n");
        let head = header_section(&article.octets).len();
        let mut octets = Vec::with_capacity(article.octets.len() + xref.len());
        octets.extend_from_slice(&article.octets[..head]);
        octets.extend_from_slice(xref.as_bytes());
        octets.extend_from_slice(&article.octets[head..]);
        let crc = crc32fast::hash(&octets);

        // No sync before the rename: a crash may leave the renamed file empty or short, and
        // its overview line's checksum then says so at the next open.
        let tmp = self.tmp.join(format!("news.{}.tmp", unique_suffix()));
        let first = &flight.targets[0];
        let first_name = first.number.to_string();
        let written = File::create(&tmp).and_then(|mut f| f.write_all(&octets));
        let renamed = written
            .and_then(|()| renameat(CWD, &tmp, &*first.dir, &first_name).map_err(io::Error::from));
        if let Err(e) = renamed {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.into());
        }
        flight.files = 1;
        for t in &flight.targets[1..] {
            linkat(
                &*first.dir,
                &first_name,
                &*t.dir,
                t.number.to_string(),
                AtFlags::empty(),
            )
            .map_err(io::Error::from)?;
            flight.files += 1;
        }

        let mut state = self.state();
        #[cfg(test)]
        if self
            .faults
            .fail_append
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(io::Error::other("injected: overview append failed").into());
        }
        // (group, offset) of each line appended, to take them back if a later one fails.
        let mut appended: Vec<(String, u64)> = Vec::new();
        let mut failed = None;
        for t in &flight.targets {
            let Some(g) = state.groups.get_mut(&t.group) else {
                continue;
            };
            if g.incarnation != t.incarnation {
                // Removed (and created again) meanwhile: the article went with the old one.
                continue;
            }
            let overview = Overview::of_article(t.number, &octets);
            let line = overview_line(
                &overview,
                flight.arrived,
                Some(crc),
                flight.poster.as_deref(),
            );
            match append_line(g, &line) {
                Ok(offset) => {
                    g.in_flight.push(Entry {
                        number: t.number,
                        arrived: flight.arrived,
                        id: Arc::from(article.message_id.as_str()),
                        poster: flight.poster.clone(),
                        offset,
                        len: line.len() as u32,
                    });
                    appended.push((t.group.clone(), offset));
                    flight.lengths.push(Synced {
                        group: t.group.clone(),
                        generation: g.generation,
                        len: g.overview_len,
                    });
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let Some(error) = failed else {
            return Ok(state);
        };
        // Under the lock since the appends: each of our lines is still its file's last.
        for (group, offset) in appended {
            if let Some(g) = state.groups.get_mut(&group) {
                if let Err(e) = g.overview.set_len(offset) {
                    // A line that cannot be taken back could be read as acknowledged after a
                    // crash: stop acknowledging, as after a failed sync.
                    tracing::error!(%group, error = %e, "news: taking back an overview line");
                    self.queue().poisoned = Some(e.kind());
                } else {
                    g.overview_len = offset;
                }
            }
        }
        Err(error.into())
    }

    /// Forgets a post that failed: its in-flight entries, its reservation, its files (its
    /// numbers stay used; a line left in an overview file is dropped by the next rewrite or,
    /// its article gone, at the next open).
    fn abandon(&self, flight: &Flight) {
        {
            let mut state = self.state();
            for t in &flight.targets {
                if let Some(g) = state.groups.get_mut(&t.group) {
                    if g.incarnation == t.incarnation {
                        g.in_flight.retain(|e| e.number != t.number);
                    }
                }
            }
            state.posting.remove(&flight.message_id);
        }
        for t in &flight.targets[..flight.files] {
            let _ = unlinkat(&*t.dir, t.number.to_string(), AtFlags::empty());
        }
    }

    /// Step 3: makes a synced batch readable and advances the groups' marks.
    fn publish(&self, batch: &[(Flight, Done)]) {
        let mut state = self.state();
        for (flight, _) in batch {
            let mut places = Vec::with_capacity(flight.targets.len());
            for t in &flight.targets {
                let Some(g) = state.groups.get_mut(&t.group) else {
                    continue;
                };
                if g.incarnation != t.incarnation {
                    continue;
                }
                let Some(i) = g.in_flight.iter().position(|e| e.number == t.number) else {
                    continue;
                };
                let entry = g.in_flight.swap_remove(i);
                g.shown_high = g.shown_high.max(entry.number);
                let at = g.entries.partition_point(|e| e.number < entry.number);
                g.entries.insert(at, entry);
                places.push((t.group.clone(), t.number));
            }
            if !places.is_empty() {
                state
                    .ids
                    .insert(Arc::from(flight.message_id.as_str()), places);
            }
            state.posting.remove(&flight.message_id);
        }
        // A mark that cannot be written stays behind: more lines are checked at the next
        // open, nothing is lost.
        for s in batch.iter().flat_map(|(f, _)| &f.lengths) {
            let Some(g) = state.groups.get_mut(&s.group) else {
                continue;
            };
            if g.generation == s.generation && s.len > g.synced {
                match super::recover::write_mark(&g.mark, s.len) {
                    Ok(()) => g.synced = s.len,
                    Err(error) => tracing::warn!(group = %s.group, %error, "news: .synced"),
                }
            }
        }
    }

    /// Makes a batch durable with one `syncfs`: every article file, rename, link and overview
    /// line written before it. (Syncing each file, directory and overview file instead was
    /// measured at a tenth of the rate: each `fsync` is a journal commit of its own.)
    fn sync(&self) -> io::Result<()> {
        #[cfg(test)]
        {
            self.faults.pause("syncing");
            if self
                .faults
                .fail_sync
                .swap(false, std::sync::atomic::Ordering::SeqCst)
            {
                return Err(io::Error::other("injected: sync failed"));
            }
        }
        rustix::fs::syncfs(&self.root_dir).map_err(io::Error::from)
    }
}

/// The syncer thread: takes what is queued, syncs all of it at once, publishes it and answers
/// each poster; stops when the repository closes and its queue is empty.
pub(super) fn run_syncer(inner: &Inner) {
    loop {
        let (batch, poisoned) = {
            let mut queue = inner.queue();
            while queue.flights.is_empty() && !queue.stop {
                queue = inner.queued.wait(queue).unwrap_or_else(|p| p.into_inner());
            }
            if queue.flights.is_empty() {
                return;
            }
            (std::mem::take(&mut queue.flights), queue.poisoned)
        };
        let synced = match poisoned {
            Some(kind) => Err(io::Error::new(kind, "an earlier news sync failed")),
            None => inner.sync(),
        };
        match synced {
            Ok(()) => {
                inner.publish(&batch);
                for (_, done) in batch {
                    done.send(Ok(()));
                }
            }
            Err(error) => {
                if poisoned.is_none() {
                    tracing::error!(%error, "news: sync failed; no more posts until a restart");
                    inner.queue().poisoned = Some(error.kind());
                }
                for (flight, done) in batch {
                    inner.abandon(&flight);
                    done.send(Err(io::Error::new(error.kind(), error.to_string()).into()));
                }
            }
        }
    }
}
