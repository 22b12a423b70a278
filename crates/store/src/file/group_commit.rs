//! Group commit: many writers, one flush. Each write takes a numbered ticket; a caller that
//! needs its write durable either finds a flush already covering it, waits for the running one,
//! or runs the next flush itself for everything written so far. Used by the log spool (one
//! `fdatasync` for every record appended meanwhile), the Maildir writer (one `syncfs` and a
//! batch of renames) and the directory syncer of the one-file-per-mail repository.
//!
//! A failed `fsync` poisons the committer for good: the kernel may have dropped the dirty
//! pages, and a later flush would succeed without writing them, so nothing more may be
//! acknowledged. A flush that failed before anything could be lost (an `open` or a `rename`
//! refused for want of descriptors or space) is [`FlushError::Retry`]: its caller puts back
//! what it did not do, its waiters fail, and the next flush tries again.

use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant};

// std's locks; the loom model of this module (group_commit_model.rs) builds it on loom's.
use super::sync::{Condvar, Mutex, MutexGuard};

/// How a flush failed.
#[derive(Debug)]
pub enum FlushError {
    /// Written data may be lost (a failed `fsync`): the committer is poisoned.
    Poison(io::Error),
    /// Nothing was lost, and what the flush did not do was put back in the pending writes
    /// ([`GroupCommit::with_pending`]) for the next flush; only this flush's waiters fail.
    Retry(io::Error),
}

impl From<io::Error> for FlushError {
    /// Any I/O error of a flush poisons, unless the flush says otherwise.
    fn from(e: io::Error) -> Self {
        FlushError::Poison(e)
    }
}

/// The group commit of writes whose flush needs `P`: what was written since the last flush
/// (files to sync, renames to do), handed to the caller that runs the next one.
#[derive(Debug)]
pub struct GroupCommit<P> {
    state: Mutex<State<P>>,
    /// Wakes callers waiting for a flush to end.
    flushed: Condvar,
    /// Wakes a flusher thread when a passive waiter arrives.
    passive: Condvar,
    /// What failed, for the error of every later call.
    what: &'static str,
}

#[derive(Debug)]
struct State<P> {
    /// Tickets handed out: writes so far.
    written: u64,
    /// Every write up to this ticket is durable.
    durable: u64,
    /// Whether a caller is flushing now.
    running: bool,
    /// Callers waiting for durability without running a flush themselves.
    passive_waiters: usize,
    /// Set for good by a failed flush.
    poisoned: Option<io::ErrorKind>,
    /// Writes that their flush failed alone, until their owner learns it.
    failed: HashMap<u64, io::Error>,
    pending: P,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl<P> GroupCommit<P> {
    /// A committer whose flushes fail with "an earlier `what` failed" once poisoned.
    pub fn new(pending: P, what: &'static str) -> Self {
        GroupCommit {
            state: Mutex::new(State {
                written: 0,
                durable: 0,
                running: false,
                passive_waiters: 0,
                poisoned: None,
                failed: HashMap::new(),
                pending,
            }),
            flushed: Condvar::new(),
            passive: Condvar::new(),
            what,
        }
    }

    /// Counts a write that is complete in the OS, recording with `record` what the next flush
    /// must cover. Returns its ticket.
    pub fn add(&self, record: impl FnOnce(&mut P)) -> u64 {
        self.add_numbered(|pending, _| record(pending))
    }

    /// Records a write that knows its own ticket (to [`fail`](GroupCommit::fail) it alone).
    pub fn add_numbered(&self, record: impl FnOnce(&mut P, u64)) -> u64 {
        let mut state = lock(&self.state);
        let ticket = state.written + 1;
        record(&mut state.pending, ticket);
        state.written = ticket;
        ticket
    }

    /// Marks one write of a flush as failed (called by the flush): the flush may succeed for
    /// the others, and [`wait_each`](GroupCommit::wait_each) reports this one's error to its
    /// owner.
    pub fn fail(&self, ticket: u64, error: io::Error) {
        lock(&self.state).failed.insert(ticket, error);
    }

    /// Like [`wait`](GroupCommit::wait) for the last of `tickets`, then fails if any of them
    /// was [failed](GroupCommit::fail) by its flush.
    pub fn wait_each<T>(
        &self,
        tickets: &[u64],
        delay: Duration,
        take: impl FnOnce(&mut P) -> T,
        flush: impl FnOnce(T) -> Result<(), FlushError>,
    ) -> io::Result<()> {
        let Some(&last) = tickets.iter().max() else {
            return Ok(());
        };
        let waited = self.wait(last, delay, take, flush);
        let mut state = lock(&self.state);
        let mut failed = tickets.iter().filter_map(|t| state.failed.remove(t));
        let first = failed.next();
        failed.for_each(drop);
        waited?;
        first.map_or(Ok(()), Err)
    }

    /// Changes what the next flush covers without counting a write.
    pub fn with_pending<T>(&self, change: impl FnOnce(&mut P) -> T) -> T {
        change(&mut lock(&self.state).pending)
    }

    /// The ticket of the last write so far.
    pub fn written(&self) -> u64 {
        lock(&self.state).written
    }

    /// Up to which ticket every write is durable.
    #[cfg(test)]
    pub fn durable(&self) -> u64 {
        lock(&self.state).durable
    }

    fn poisoned_error(&self, kind: io::ErrorKind) -> io::Error {
        io::Error::new(kind, format!("an earlier {} failed", self.what))
    }

    /// Returns once write `ticket` is durable. When no flush is running, this caller runs one,
    /// after `delay` (time for more writers to join it): `take` (under the lock) takes what the
    /// flush covers, `flush` (without the lock) makes it durable.
    pub fn wait<T>(
        &self,
        ticket: u64,
        delay: Duration,
        take: impl FnOnce(&mut P) -> T,
        flush: impl FnOnce(T) -> Result<(), FlushError>,
    ) -> io::Result<()> {
        let mut take = Some(take);
        let mut flush = Some(flush);
        let mut state = lock(&self.state);
        loop {
            if let Some(kind) = state.poisoned {
                return Err(self.poisoned_error(kind));
            }
            if state.durable >= ticket {
                return Ok(());
            }
            if state.running {
                state = self.flushed.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            // A flush covers every ticket written before it starts, ours included, so this
            // caller runs at most one.
            let (Some(take), Some(flush)) = (take.take(), flush.take()) else {
                unreachable!("a flush covering the ticket ran");
            };
            state.running = true;
            if !delay.is_zero() {
                drop(state);
                std::thread::sleep(delay);
                state = lock(&self.state);
            }
            let covers = state.written;
            let batch = take(&mut state.pending);
            drop(state);
            let result = flush(batch);
            state = lock(&self.state);
            state.running = false;
            self.flushed.notify_all();
            match result {
                Ok(()) => state.durable = state.durable.max(covers),
                Err(FlushError::Poison(e)) => {
                    state.poisoned = Some(e.kind());
                    return Err(e);
                }
                // What it covered is pending again; the next flush covers it.
                Err(FlushError::Retry(e)) => return Err(e),
            }
        }
    }

    /// Returns once write `ticket` is durable without running a flush: another writer's flush
    /// covers it, or the flusher thread's (see [`GroupCommit::wait_for_passive_waiters`]).
    pub fn wait_passively(&self, ticket: u64) -> io::Result<()> {
        let mut state = lock(&self.state);
        state.passive_waiters += 1;
        self.passive.notify_one();
        let result = loop {
            if let Some(kind) = state.poisoned {
                break Err(self.poisoned_error(kind));
            }
            if state.durable >= ticket {
                break Ok(());
            }
            state = self.flushed.wait(state).unwrap_or_else(|p| p.into_inner());
        };
        state.passive_waiters -= 1;
        result
    }

    /// For a flusher thread: waits up to `timeout` for a passive waiter; returns whether one
    /// waits (and the committer is not poisoned).
    pub fn wait_for_passive_waiters(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = lock(&self.state);
        while state.passive_waiters == 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = self
                .passive
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        state.passive_waiters > 0 && state.poisoned.is_none()
    }
}
