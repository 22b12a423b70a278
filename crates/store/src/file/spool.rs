//! The file spool: a [`FileMailRepository`] whose mails are handed to one worker at a time.
//!
//! Locks live in memory: the file backend serves one process, and a crash drops every lock, so
//! mails whose processing was cut short are simply handed out again after the restart. New
//! mails wake a waiting worker at once; the directory is also rescanned now and then so that
//! released or externally added mails are found.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mailroom_mailet::Mail;

use super::mail::Known;
use super::FileMailRepository;
use crate::{IncomingMessage, MailRepository, Result, SpoolRepository};

/// How often an idle spool looks at its directory for mails it was not told about.
const RESCAN_INTERVAL: Duration = Duration::from_secs(10);

/// A spool in a directory. See the [module docs](self).
pub struct FileSpool {
    repo: FileMailRepository,
    queue: Arc<Queue>,
}

/// Which mails wait and which are leased.
#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    wake: Condvar,
}

#[derive(Default)]
struct QueueState {
    /// Mails waiting for a worker, oldest first.
    waiting: VecDeque<String>,
    /// Names in `waiting` or leased: never queued twice.
    known: HashSet<String>,
    /// Names currently handed to a worker, with the form of the message the file holds, so
    /// that a processor hop of an unchanged message is a plain append.
    leased: HashMap<String, MessageForm>,
    /// Mails this process wrote or has checked whole; any other (found by a rescan, say after
    /// a crash) has its message checked against its record before it is handed out.
    trusted: HashSet<String>,
    /// Released mails waiting for their retry time (also in `known`).
    delayed: Vec<(Instant, String)>,
    /// When the directory was last listed.
    last_scan: Option<Instant>,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a mail this process wrote whole (and so need not check).
    fn push(&self, name: &str) {
        let mut state = self.lock();
        state.trusted.insert(name.to_string());
        if state.known.insert(name.to_string()) {
            state.waiting.push_back(name.to_string());
            self.wake.notify_one();
        }
    }
}

impl FileSpool {
    /// Opens (creating if needed) the spool in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        Ok(FileSpool {
            repo: FileMailRepository::open(dir)?,
            queue: Arc::default(),
        })
    }

    /// Queues every mail in the directory that is neither waiting nor leased.
    fn rescan(&self, state: &mut QueueState) -> Result<()> {
        for name in self.repo.list()? {
            if state.known.insert(name.clone()) {
                state.waiting.push_back(name);
            }
        }
        state.last_scan = Some(Instant::now());
        Ok(())
    }
}

impl MailRepository for FileSpool {
    fn store(&self, mail: &Mail) -> Result<()> {
        // A mail stored by its leaseholder stays with it; any other is queued.
        let held = self.queue.lock().leased.get(mail.name()).cloned();
        match held {
            Some(held) => {
                let now = MessageForm::of(mail, held.crc);
                let known = if held == now {
                    Known::Same(held.crc)
                } else {
                    Known::Different
                };
                let crc = self.repo.store_checked(mail, known)?;
                if let Some(held) = self.queue.lock().leased.get_mut(mail.name()) {
                    *held = MessageForm::of(mail, crc);
                }
            }
            None => {
                self.repo.store(mail)?;
                self.queue.push(mail.name());
            }
        }
        Ok(())
    }

    fn retrieve(&self, name: &str) -> Result<Option<Mail>> {
        self.repo.retrieve(name)
    }

    fn remove(&self, name: &str) -> Result<bool> {
        let existed = self.repo.remove(name)?;
        let mut state = self.queue.lock();
        state.leased.remove(name);
        state.known.remove(name);
        state.trusted.remove(name);
        state.waiting.retain(|n| n != name);
        Ok(existed)
    }

    fn list(&self) -> Result<Vec<String>> {
        self.repo.list()
    }

    fn incoming(&self) -> Result<Box<dyn IncomingMessage>> {
        let queue = self.queue.clone();
        let on_commit = Box::new(move |name: &str| queue.push(name));
        Ok(Box::new(self.repo.incoming_with(Some(on_commit))?))
    }
}

impl SpoolRepository for FileSpool {
    fn lease(&self, timeout: Duration) -> Result<Option<Mail>> {
        let deadline = Instant::now() + timeout;
        let mut state = self.queue.lock();
        loop {
            if state
                .last_scan
                .is_none_or(|at| at.elapsed() >= RESCAN_INTERVAL)
            {
                self.rescan(&mut state)?;
            }
            let now = Instant::now();
            let (due, later): (Vec<_>, Vec<_>) =
                state.delayed.drain(..).partition(|(at, _)| *at <= now);
            state.delayed = later;
            state.waiting.extend(due.into_iter().map(|(_, name)| name));
            while let Some(name) = state.waiting.pop_front() {
                let verify = !state.trusted.contains(&name);
                match self.repo.retrieve_checked(&name, verify) {
                    Ok(Some((mail, crc))) => {
                        state.trusted.insert(name.clone());
                        state.leased.insert(name, MessageForm::of(&mail, crc));
                        return Ok(Some(mail));
                    }
                    // Removed since it was queued.
                    Ok(None) => {
                        state.known.remove(&name);
                    }
                    Err(e) => {
                        // Forgotten for now: the next rescan queues it again (a full file
                        // table, say, passes).
                        tracing::error!(mail = %name, error = %e, "cannot read spooled mail");
                        state.known.remove(&name);
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let next_due = state.delayed.iter().map(|(at, _)| *at).min();
            let wait = (deadline - now)
                .min(RESCAN_INTERVAL)
                .min(next_due.map_or(RESCAN_INTERVAL, |at| at.saturating_duration_since(now)));
            state = self
                .queue
                .wake
                .wait_timeout(state, wait)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    fn release(&self, name: &str, retry_after: Duration) {
        let mut state = self.queue.lock();
        if state.leased.remove(name).is_some() {
            if retry_after.is_zero() {
                state.waiting.push_back(name.to_string());
            } else {
                state
                    .delayed
                    .push((Instant::now() + retry_after, name.to_string()));
            }
            self.queue.wake.notify_one();
        }
    }
}

/// What can change of a mail's message (its header section and size: bodies never change),
/// and the CRC-32 of the message the file holds.
#[derive(Clone)]
struct MessageForm {
    header: Vec<u8>,
    size: u64,
    crc: u32,
}

impl MessageForm {
    fn of(mail: &Mail, crc: u32) -> Self {
        MessageForm {
            header: mail.message.header_section().to_vec(),
            size: mail.message.size(),
            crc,
        }
    }
}

impl PartialEq for MessageForm {
    /// The same message: the CRC belongs to the file, not to the form.
    fn eq(&self, other: &Self) -> bool {
        self.header == other.header && self.size == other.size
    }
}
