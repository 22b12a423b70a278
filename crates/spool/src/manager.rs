//! The workers and the processing rules of DESIGN.md §2.
//!
//! Each worker leases a mail and runs it to completion in this thread:
//! * a matcher's result is reduced to the mail's own recipients; none skips the step, all
//!   hands the mail to the mailet, some splits it: a copy with the matched recipients goes to
//!   the mailet (and then goes on in its own right), the rest continues down the processor;
//! * when a mailet changes the state, the move is persisted before processing goes on, so a
//!   crash resumes in the new processor. A split copy that has never been stored is instead
//!   stored as a new spool mail, and any worker takes it from there;
//! * `ghost`, no recipients left, or the end of a processor end processing and remove the mail
//!   from the spool;
//! * an unknown processor sends the mail to `error`; a failure inside `error` ghosts the mail
//!   after logging it, so mails never loop.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use mailroom_mailet::{state, Mail, MailAddress, MailetContext, MailetError};
use mailroom_store::{new_mail_name, LeaseToken, Leased, SpoolRepository, StoreError};

use crate::context::deliveries_on_this_thread;
use crate::tree::{OnMailetError, OnMatchError, ProcessorTree, Step};
use crate::ServerContext;

/// How long a worker waits for mail before checking for shutdown.
const POLL: Duration = Duration::from_millis(250);
/// How many finished mails a worker removes at once, after one inbox sync.
const FINISHED_BATCH: usize = 32;
/// The longest wait before a mail whose storage failed is tried again.
const MAX_RETRY: Duration = Duration::from_secs(3600);

/// The mailet container.
pub struct SpoolManager {
    tree: ProcessorTree,
    context: Arc<ServerContext>,
    /// Mails whose processing failed on storage errors, with the number of attempts.
    failures: Mutex<HashMap<String, u32>>,
}

/// The running workers.
pub struct SpoolManagerHandle {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

impl SpoolManagerHandle {
    /// Asks every worker to stop after its current mail and waits for them.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for worker in self.workers {
            let _ = worker.join();
        }
    }
}

impl SpoolManager {
    /// A SpoolManager running `tree` with `context`.
    pub fn new(tree: ProcessorTree, context: Arc<ServerContext>) -> Arc<Self> {
        Arc::new(SpoolManager {
            tree,
            context,
            failures: Mutex::default(),
        })
    }

    /// Starts `threads` workers.
    pub fn start(self: &Arc<Self>, threads: usize) -> SpoolManagerHandle {
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..threads.max(1))
            .map(|i| {
                let manager = self.clone();
                let stop = stop.clone();
                std::thread::Builder::new()
                    .name(format!("spool-{i}"))
                    .spawn(move || manager.work(&stop))
                    .expect("cannot start a spool worker thread")
            })
            .collect();
        SpoolManagerHandle { stop, workers }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn spool(&self) -> &Arc<dyn SpoolRepository> {
        self.context.spool()
    }

    fn work(&self, stop: &AtomicBool) {
        let mut finished = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            // With finished mails waiting, only take mail that is already there: before
            // waiting for more, those are made durable and removed.
            let wait = if finished.is_empty() {
                POLL
            } else {
                Duration::ZERO
            };
            match self.context.wait(self.spool().lease(wait)) {
                Ok(Some(Leased { mail, token })) => {
                    let name = mail.name().to_string();
                    let processor = mail.state().to_string();
                    match self.run(mail, processor, 0, Some(&token), &mut finished) {
                        Ok(()) => {
                            self.failures().remove(&name);
                        }
                        Err(e) => {
                            // Storage is failing (a full disk, say): retry later, less and
                            // less often, rather than re-running the mailets every second.
                            let attempts = {
                                let mut failures = self.failures();
                                let n = failures.entry(name.clone()).or_insert(0);
                                *n += 1;
                                *n
                            };
                            let delay = Duration::from_secs(1 << attempts.min(12)).min(MAX_RETRY);
                            tracing::error!(mail = %name, error = %e, attempts, retry_in = ?delay,
                                "spool storage failed; will retry");
                            self.retry_later(token, delay);
                        }
                    }
                    if finished.len() >= FINISHED_BATCH {
                        self.remove_finished(&mut finished);
                    }
                }
                Ok(None) => self.remove_finished(&mut finished),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the spool");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
        self.remove_finished(&mut finished);
    }

    /// Removes finished mails from the spool, once their deliveries are durable. One inbox
    /// sync serves the whole batch.
    fn remove_finished(&self, finished: &mut Vec<LeaseToken>) {
        if finished.is_empty() {
            return;
        }
        if let Err(e) = self.context.sync_inbox() {
            tracing::error!(error = %e, "cannot make deliveries durable; mails will be retried");
            for token in finished.drain(..) {
                self.retry_later(token, Duration::from_secs(60));
            }
            return;
        }
        for token in finished.drain(..) {
            if let Err(e) = self.context.wait(self.spool().complete(token.clone())) {
                tracing::error!(mail = %token.name(), error = %e, "cannot remove a finished mail");
                if !matches!(e, StoreError::LeaseLost(_)) {
                    self.retry_later(token, Duration::from_secs(60));
                }
            }
        }
    }

    /// Puts a leased mail back in the spool, as last stored, for another try after `delay`.
    /// Should that fail too, its lease expires and it is retried then.
    fn retry_later(&self, token: LeaseToken, delay: Duration) {
        let name = token.name().to_string();
        let result = match self.context.wait(self.spool().retrieve(&name)) {
            Ok(Some(mail)) => self.context.wait(self.spool().requeue(
                token,
                &mail,
                SystemTime::now() + delay,
            )),
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::error!(mail = %name, error = %e,
                "cannot put a mail back in the spool; retried once its lease expires");
        }
    }

    /// Processes one leased spool mail until it leaves this worker (ghosted, or stored for
    /// another try when storage fails).
    pub fn process(&self, leased: Leased) -> Result<(), StoreError> {
        let processor = leased.mail.state().to_string();
        let mut finished = Vec::new();
        let result = self.run(
            leased.mail,
            processor,
            0,
            Some(&leased.token),
            &mut finished,
        );
        self.remove_finished(&mut finished);
        result
    }

    /// Runs a mail from `step` of `processor`. `lease` is the spool lease of a leased mail,
    /// `None` for a split copy held only in memory.
    fn run(
        &self,
        mut mail: Mail,
        mut processor: String,
        mut step: usize,
        lease: Option<&LeaseToken>,
        finished: &mut Vec<LeaseToken>,
    ) -> Result<(), StoreError> {
        let ctx: &dyn MailetContext = &*self.context;
        let mut deliveries = deliveries_on_this_thread();
        loop {
            if mail.state() == state::GHOST {
                return Self::finish(lease, finished);
            }
            if mail.state() != processor || self.tree.get(&processor).is_none() {
                if self.tree.get(mail.state()).is_none() {
                    let unknown = mail.state().to_string();
                    if processor == state::ERROR {
                        tracing::error!(mail = %mail.name(), processor = %unknown,
                            "mail in the error processor sent to an unknown processor; deleted");
                        return Self::finish(lease, finished);
                    }
                    tracing::warn!(mail = %mail.name(), processor = %unknown, "unknown processor");
                    mail.envelope.error_message = Some(format!("Unknown processor {unknown}"));
                    mail.set_state(state::ERROR);
                }
                // Inbox deliveries are made durable in batches, before the spool forgets a
                // mail. A hop is such a moment too: the mail stored now may have fewer
                // recipients than before (split copies delivered them), so their deliveries
                // must be durable first.
                if deliveries_on_this_thread() != deliveries {
                    self.context.sync_inbox()?;
                    deliveries = deliveries_on_this_thread();
                }
                mail.envelope.touch();
                let Some(token) = lease else {
                    // A split copy: from now on it is a spool mail of its own.
                    self.context.wait(self.spool().store(&mail))?;
                    return Ok(());
                };
                self.context.wait(self.spool().update(token, &mail))?;
                processor = mail.state().to_string();
                step = 0;
            }
            if mail.recipients().is_empty() {
                tracing::debug!(mail = %mail.name(), "no recipients left");
                return Self::finish(lease, finished);
            }
            let Some(current) = self.tree.get(&processor).and_then(|p| p.steps.get(step)) else {
                if processor != state::ERROR {
                    tracing::warn!(mail = %mail.name(), %processor,
                        "mail reached the end of its processor and is deleted; \
                         this may be a configuration error");
                }
                return Self::finish(lease, finished);
            };
            step += 1;

            let matched = match guarded(|| current.matcher.matches(&mail, ctx)) {
                Ok(matched) => own_recipients(&mail, matched),
                Err(e) => match &current.on_match_error {
                    OnMatchError::NoMatch => Vec::new(),
                    OnMatchError::MatchAll => mail.recipients().to_vec(),
                    OnMatchError::Error => {
                        fail(&mut mail, &processor, current, "matcher", &e, state::ERROR);
                        continue;
                    }
                    OnMatchError::Processor(target) => {
                        fail(&mut mail, &processor, current, "matcher", &e, target);
                        continue;
                    }
                },
            };
            if matched.is_empty() {
                continue;
            }
            if matched.len() < mail.recipients().len() {
                let rest = mail
                    .recipients()
                    .iter()
                    .filter(|r| !matched.contains(r))
                    .cloned()
                    .collect();
                let mut copy = mail.split_off(new_mail_name(), matched);
                mail.set_recipients(rest);
                service(current, &mut copy, &processor, ctx);
                self.run(copy, processor.clone(), step, None, finished)?;
            } else {
                service(current, &mut mail, &processor, ctx);
            }
        }
    }

    /// A mail leaves processing: a spool mail is set aside for removal from the spool, which
    /// happens once its deliveries are durable (see [`SpoolManager::remove_finished`]).
    fn finish(
        lease: Option<&LeaseToken>,
        finished: &mut Vec<LeaseToken>,
    ) -> Result<(), StoreError> {
        if let Some(token) = lease {
            finished.push(token.clone());
        }
        Ok(())
    }
}

/// Runs a matcher or mailet call, turning a panic into an error so that one bad mailet cannot
/// take a worker down.
fn guarded<T>(call: impl FnOnce() -> Result<T, MailetError>) -> Result<T, MailetError> {
    catch_unwind(AssertUnwindSafe(call))
        .unwrap_or_else(|_| Err(MailetError::new("panicked (see the log)")))
}

/// The matched recipients that really are the mail's, each once, in the mail's order.
fn own_recipients(mail: &Mail, matched: Vec<MailAddress>) -> Vec<MailAddress> {
    mail.recipients()
        .iter()
        .filter(|r| matched.contains(r))
        .cloned()
        .collect()
}

/// Runs the mailet of `current`, applying `onMailetException` when it fails.
fn service(current: &Step, mail: &mut Mail, processor: &str, ctx: &dyn MailetContext) {
    if let Err(e) = guarded(|| current.mailet.service(mail, ctx)) {
        match &current.on_mailet_error {
            OnMailetError::Ignore => {
                tracing::warn!(mail = %mail.name(), step = %current.label, error = %e,
                    "mailet failed; ignored as configured");
            }
            OnMailetError::Error => fail(mail, processor, current, "mailet", &e, state::ERROR),
            OnMailetError::Processor(target) => {
                fail(mail, processor, current, "mailet", &e, target)
            }
        }
    }
}

/// Records a failure on the mail and moves it to `target`; inside `error` the mail is ghosted
/// instead, so that it cannot loop.
fn fail(
    mail: &mut Mail,
    processor: &str,
    current: &Step,
    what: &str,
    error: &MailetError,
    target: &str,
) {
    let message = format!("{what} {} failed: {error}", current.label);
    if processor == state::ERROR {
        tracing::error!(mail = %mail.name(), %message, "failure in the error processor; mail deleted");
        mail.set_state(state::GHOST);
        return;
    }
    tracing::warn!(mail = %mail.name(), %processor, %message, to = %target, "moving mail");
    mail.envelope.error_message = Some(message);
    mail.set_state(target);
}
